"""The HTTP API's contract with clients: self-hosted /docs, strict request bodies, model info."""

import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import CONTEXTS  # noqa: E402
from pocketqa.inference.answerer import QuestionAnswerer  # noqa: E402
from pocketqa.modeldir import update_meta  # noqa: E402
from pocketqa.serve.app import create_app  # noqa: E402

QUESTION, CONTEXT = CONTEXTS[0][2][0][0], CONTEXTS[0][1]


@pytest.fixture(scope="module")
def client(tiny_bert_dir):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")
    with TestClient(create_app(qa, model_dir=tiny_bert_dir)) as c:
        yield c


# -- /docs works without internet ----------------------------------------------------


def test_docs_page_loads_swagger_ui_from_the_server_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"""url: ?["']([^"']+)["']""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from another host"
    scripts = re.findall(r"""<script src=["']([^"']+)["']""", page.text)
    styles = re.findall(r"""<link [^>]*href=["']([^"']+\.css)["']""", page.text)
    assert scripts and styles
    for url in scripts:
        got = client.get(url)
        assert got.status_code == 200 and "javascript" in got.headers["content-type"]
        assert "SwaggerUIBundle" in got.text
    for url in styles:
        got = client.get(url)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/css")
        assert ".swagger-ui" in got.text


def test_no_page_needs_a_cdn(client):
    # ReDoc has no packaged assets: FastAPI's /redoc would be a blank page offline, so it is not served.
    assert client.get("/redoc").status_code == 404


def test_swagger_ui_license_ships_with_it(client):
    from importlib import resources

    swagger = resources.files("pocketqa").joinpath("serve/static/swagger")
    assert "Apache License" in swagger.joinpath("LICENSE").read_text(encoding="utf-8")


# -- strict request bodies -----------------------------------------------------------


def test_unknown_field_is_refused_by_name(client):
    got = client.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT, "topk": 3})
    assert got.status_code == 422
    assert "topk" in got.json()["detail"] and "not permitted" in got.json()["detail"]


def test_unknown_field_in_a_batch_item_is_refused_by_name(client):
    item = {"question": QUESTION, "context": CONTEXT, "abstian": False}
    got = client.post("/v1/answer/batch", json={"items": [item]})
    assert got.status_code == 422
    assert "items.0.abstian" in got.json()["detail"]


def test_body_without_json_content_type_names_the_header(client):
    body = '{"question": "%s", "context": "%s"}' % (QUESTION, CONTEXT)
    got = client.post("/v1/answer", content=body, headers={"Content-Type": "text/plain"})
    assert got.status_code == 415
    assert "Content-Type: application/json" in got.json()["detail"]
    got = client.post("/v1/answer", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert got.status_code == 415  # what curl -d sends without -H
    assert "Content-Type: application/json" in got.json()["detail"]
    got = client.post("/v1/answer", content=body)  # no Content-Type at all
    assert got.status_code == 415
    assert "Content-Type: application/json" in got.json()["detail"]


@pytest.mark.parametrize(
    "field,value",
    [("top_k", "3"), ("top_k", 3.0), ("top_k", True), ("abstain", "false"), ("abstain", 0), ("question", 5)],
)
def test_numbers_and_booleans_are_not_coerced(client, field, value):
    body = {"question": QUESTION, "context": CONTEXT, field: value}
    got = client.post("/v1/answer", json=body)
    assert got.status_code == 422, got.json()
    assert field in got.json()["detail"]


def test_well_formed_request_still_answers(client):
    got = client.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT, "top_k": 2, "abstain": False})
    assert got.status_code == 200
    assert len(got.json()["answers"]) == 2


# -- /v1/model -----------------------------------------------------------------------


def test_model_info_shows_the_metrics_the_card_shows(tmp_path, tiny_bert_dir):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    scores = {"exact": 61.5, "f1": 64.25, "HasAns_exact": 50.0, "NoAns_exact": 73.0}
    update_meta(model_dir, metrics={"dev": scores, "note": "SQuAD 2.0 dev"})
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    with TestClient(create_app(qa, model_dir=model_dir)) as c:
        info = c.get("/v1/model").json()
    assert info["metrics"] == scores


def test_model_info_shows_the_scores_of_the_card(tmp_path, tiny_bert_dir):
    """The bundled model's scores live in eval_results.json, written by ``pocketqa card --dev``."""
    import json
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    update_meta(model_dir, metrics_pytorch_bf16_gpu={"exact": 1.0})  # not the served model's
    results = {"exact": 67.06, "f1": 70.25, "total": 11873, "threshold": -2.66, "data": "dev-v2.0.json.gz"}
    (model_dir / "eval_results.json").write_text(json.dumps(results), encoding="utf-8")
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    with TestClient(create_app(qa, model_dir=model_dir)) as c:
        info = c.get("/v1/model").json()
    assert info["metrics"] == results
