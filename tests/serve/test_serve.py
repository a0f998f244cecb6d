"""The HTTP API (pocketqa.serve.app) on a tiny random model: same answers as QuestionAnswerer,
every limit answered with its 4xx, API keys, model info, and real micro-batching."""

import asyncio
import json
import math
import shutil
import socket
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import CONTEXTS, SlowBackend  # noqa: E402
from pocketqa.inference.answerer import QuestionAnswerer  # noqa: E402
from pocketqa.errors import ConfigError  # noqa: E402
from pocketqa.models import dir_size_mb  # noqa: E402
from pocketqa.modeldir import update_meta  # noqa: E402
from pocketqa.serve.app import create_app  # noqa: E402
from pocketqa.serve.limits import Limits  # noqa: E402
from pocketqa.serve.server import API_KEY_ENV, resolve_api_key  # noqa: E402

# (question, context) pairs: every question of the fixture contexts, plus one off-topic.
PAIRS = [(q, ctx) for _, ctx, qas in CONTEXTS for q, _, _ in qas] + [("Who won the war?", CONTEXTS[1][1])]


def as_list(result) -> list[dict]:
    return [result] if isinstance(result, dict) else result


def assert_same_answers(got: list[dict], expected: list[dict], exact: bool = True) -> None:
    """Texts and offsets must match exactly; scores exactly, or to float noise across batch shapes."""
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(a["answer"], a["start"], a["end"]) for a in expected]
    for g, e in zip(got, expected):
        if exact:
            assert (g["score"], g["null_odds"]) == (float(e["score"]), float(e["null_odds"]))
        else:
            assert g["score"] == pytest.approx(float(e["score"]), rel=1e-4, abs=1e-6)
            assert g["null_odds"] == pytest.approx(float(e["null_odds"]), rel=1e-4, abs=1e-5)


@pytest.fixture(scope="module")
def qa(tiny_bert_dir):
    return QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")


@pytest.fixture(scope="module")
def client(qa, tiny_bert_dir):
    with TestClient(create_app(qa, model_dir=tiny_bert_dir)) as c:
        yield c


# -- answers --------------------------------------------------------------------------


@pytest.mark.parametrize("top_k,abstain", [(1, True), (1, False), (3, True), (5, False)])
def test_single_answer_equals_question_answerer(client, qa, top_k, abstain):
    for question, context in PAIRS[:4]:
        r = client.post("/v1/answer", json={"question": question, "context": context, "top_k": top_k, "abstain": abstain})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = as_list(qa(question, context, top_k=top_k, abstain=abstain))
        assert_same_answers(body["answers"], expected)
        assert len(body["answers"]) == (1 if top_k == 1 else len(expected))
        assert body["abstained"] is (expected[0]["start"] is None)


def test_defaults_are_top1_with_abstention(tiny_bert_dir):
    # A threshold below every null_odds makes the model abstain on everything...
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", threshold=-1e9)
    question, context = PAIRS[0]
    with TestClient(create_app(qa)) as c:
        body = c.post("/v1/answer", json={"question": question, "context": context}).json()
        assert body["abstained"] is True
        assert_same_answers(body["answers"], [qa(question, context)])
        assert body["answers"][0]["start"] is None and body["answers"][0]["answer"] == ""
        # ...unless the request turns abstention off: then the best span comes first.
        body = c.post("/v1/answer", json={"question": question, "context": context, "top_k": 2, "abstain": False}).json()
        assert body["abstained"] is False
        assert_same_answers(body["answers"], qa(question, context, top_k=2, abstain=False))
        # With abstention on and top_k > 1 the no-answer leads and real spans follow.
        body = c.post("/v1/answer", json={"question": question, "context": context, "top_k": 3}).json()
        assert body["abstained"] is True and len(body["answers"]) == 3
        assert_same_answers(body["answers"], qa(question, context, top_k=3))
        assert all(a["start"] is not None for a in body["answers"][1:])


def test_batch_equals_question_answerer_on_lists(client, qa):
    questions, contexts = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    items = [{"question": q, "context": c, "top_k": 3, "abstain": False} for q, c in PAIRS]
    r = client.post("/v1/answer/batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = qa(questions, contexts, top_k=3, abstain=False)
    assert len(results) == len(PAIRS)
    for got, exp in zip(results, expected):
        assert_same_answers(got["answers"], exp)


def test_batch_items_keep_their_own_top_k_and_abstain(client, qa):
    settings = [(1, True), (4, False), (2, True), (1, False)]
    items = [{"question": q, "context": c, "top_k": k, "abstain": a} for (q, c), (k, a) in zip(PAIRS, settings)]
    results = client.post("/v1/answer/batch", json={"items": items}).json()["results"]
    for (q, c), (k, a), got in zip(PAIRS, settings, results):
        expected = as_list(qa(q, c, top_k=k, abstain=a))
        assert len(got["answers"]) == len(expected) and (k == 1 or len(expected) > 1)
        assert_same_answers(got["answers"], expected, exact=False)


# -- limits ---------------------------------------------------------------------------

SMALL = Limits(max_body_bytes=3000, max_context_chars=300, max_question_chars=50, max_batch_items=3)


@pytest.fixture(scope="module")
def small_client(qa):
    with TestClient(create_app(qa, limits=SMALL)) as c:
        yield c


@pytest.mark.parametrize(
    "payload,field,words",
    [
        ({"question": "", "context": "Paris is big."}, "question", "must not be empty"),
        ({"question": "   ", "context": "Paris is big."}, "question", "must not be empty"),
        ({"question": "Where?", "context": "\n "}, "context", "must not be empty"),
        ({"question": "q" * 51, "context": "Paris is big."}, "question", "at most 50"),
        ({"question": "Where?", "context": "c" * 301}, "context", "at most 300"),
        ({"question": "Where?", "context": "Paris is big.", "top_k": 0}, "top_k", "greater than or equal to 1"),
        ({"question": "Where?", "context": "Paris is big.", "top_k": 21}, "top_k", "less than or equal to 20"),
        ({"question": "Where?"}, "context", "Field required"),
        ({"question": ["Where?"], "context": "Paris is big."}, "question", "string"),
    ],
)
def test_bad_single_request_is_422_naming_the_field(small_client, payload, field, words):
    r = small_client.post("/v1/answer", json=payload)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{field}:") and words in detail, detail


def test_bad_batch_items_are_named_by_index(small_client):
    items = [{"question": "Where?", "context": "Paris is big."}, {"question": " ", "context": "x" * 301}]
    r = small_client.post("/v1/answer/batch", json={"items": items})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "items.1.question: must not be empty" in detail and "items.1.context" in detail and "items.0" not in detail

    r = small_client.post("/v1/answer/batch", json={"items": [items[0]] * 4})
    assert r.status_code == 422 and r.json()["detail"].startswith("items: 4 given, at most 3")
    r = small_client.post("/v1/answer/batch", json={"items": []})
    assert r.status_code == 422 and r.json()["detail"] == "items: must not be empty"


def test_invalid_json_is_422_with_a_message(small_client):
    r = small_client.post("/v1/answer", content=b'{"question": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("body: invalid JSON")


def test_large_body_is_413_declared_or_streamed(small_client):
    big = json.dumps({"question": "Where?", "context": "x" * 5000}).encode()
    r = small_client.post("/v1/answer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 3000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the middleware must count what arrives
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = small_client.post("/v1/answer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 3000 bytes" in r.json()["detail"]
    # Just under the limit still works.
    ok = small_client.post("/v1/answer", json={"question": "Where?", "context": "Paris is big."})
    assert ok.status_code == 200


def test_full_queue_is_503(qa):
    with TestClient(create_app(qa, limits=Limits(max_queue=2))) as c:
        items = [{"question": "Where?", "context": "Paris is big."}] * 3
        r = c.post("/v1/answer/batch", json={"items": items})
        assert r.status_code == 503 and "retry" in r.json()["detail"] and r.headers["retry-after"] == "1"
        assert c.post("/v1/answer/batch", json={"items": items[:2]}).status_code == 200


def test_bad_limits_are_config_errors():
    with pytest.raises(ConfigError, match="max_context_chars must be >= 1, found 0"):
        Limits(max_context_chars=0)


class FlakyBackend:
    """Fails on the first call (with a message that must not reach clients), then works."""

    def __init__(self, real):
        self.real = real
        self.input_names = real.input_names
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("CUDA exploded in /secret/path/model.py")
        return self.real(batch)


def test_model_error_is_generic_500_and_server_recovers(qa, caplog):
    flaky = QuestionAnswerer(FlakyBackend(qa.backend), qa.tokenizer, window=qa.window, name="flaky")
    question, context = PAIRS[0]
    with TestClient(create_app(flaky), raise_server_exceptions=False) as c:
        r = c.post("/v1/answer", json={"question": question, "context": context})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error while answering; see the server log"}
        assert "secret" not in r.text and "Traceback" not in r.text
        assert "CUDA exploded" in caplog.text  # ...but the log has it
        r = c.post("/v1/answer", json={"question": question, "context": context})
        assert r.status_code == 200
        assert_same_answers(r.json()["answers"], as_list(qa(question, context)))


# -- API key --------------------------------------------------------------------------


def test_api_key(qa):
    payload = {"question": "What is the capital of France?", "context": CONTEXTS[1][1]}
    with TestClient(create_app(qa, api_key="s3cret")) as c:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret "}):
            for method, url, body in (("POST", "/v1/answer", payload), ("POST", "/v1/answer/batch", {"items": [payload]}), ("GET", "/v1/model", None)):
                r = c.request(method, url, json=body, headers=headers)
                assert r.status_code == 401, (url, headers)
                assert "X-API-Key" in r.json()["detail"]
        assert c.post("/v1/answer", json=payload, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        # Health and the page stay open, and tell the page a key is needed.
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["api_key_required"] is True
        assert c.get("/").status_code == 200
    with TestClient(create_app(qa)) as c:
        assert c.get("/health").json()["api_key_required"] is False
        assert c.post("/v1/answer", json=payload).status_code == 200


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(None) == "from-env"
    assert resolve_api_key("flag") == "flag"
    monkeypatch.delenv(API_KEY_ENV)
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_ENV, "")
    assert resolve_api_key(None) is None


# -- info endpoints and page ----------------------------------------------------------


def test_model_info_reads_pocketqa_json(tiny_bert_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    metrics = {"exact": 12.5, "f1": 15.25, "HasAns_f1": 20.0}
    update_meta(model_dir, name="tiny-test", threshold=-0.75, metrics=metrics)
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    with TestClient(create_app(qa, model_dir=model_dir, max_batch=7, max_wait_ms=3)) as c:
        info = c.get("/v1/model").json()
    assert info["name"] == "tiny-test"
    assert info["metrics"] == metrics
    assert info["threshold"] == -0.75
    assert info["backend"] == "torch"
    assert info["size_mb"] == pytest.approx(dir_size_mb(model_dir), abs=1e-3) and info["size_mb"] > 0
    assert info["batching"] == {"max_batch": 7, "max_wait_ms": 3.0}
    assert info["window"] == qa.window.to_dict()
    assert info["limits"]["max_context_chars"] == 20_000 and info["limits"]["max_top_k"] == 20


def test_health_counts_questions(qa):
    with TestClient(create_app(qa)) as c:
        before = c.get("/health").json()
        assert before == {
            "status": "ok", "model": qa.name, "api_key_required": False,
            "model_calls": 0, "questions": 0, "largest_batch": 0, "pending": 0,
        }
        c.post("/v1/answer/batch", json={"items": [{"question": q, "context": x} for q, x in PAIRS[:3]]})
        after = c.get("/health").json()
        assert (after["questions"], after["model_calls"], after["largest_batch"], after["pending"]) == (3, 1, 3, 0)


def test_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for needed in ('id="context"', 'id="question"', 'id="ask"', 'id="api-key"', '"/v1/answer"', 'createElement("mark")'):
        assert needed in html, needed
    # No CDN, no external fetches: the page must work offline.
    assert "http://" not in html and "https://" not in html
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/answer", "/v1/answer/batch", "/v1/model", "/health"} <= set(schema["paths"])


# -- batching -------------------------------------------------------------------------


async def _ask_concurrently(app, pairs, top_k=1):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        responses = await asyncio.gather(
            *(c.post("/v1/answer", json={"question": q, "context": x, "top_k": top_k}) for q, x in pairs)
        )
    await app.state.batcher.stop()
    return responses


def _distinct_pairs(n: int) -> list[tuple[str, str]]:
    # Distinct inputs (rotated contexts) so that mixing answers up between callers would show.
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        q, ctx = PAIRS[i % len(PAIRS)]
        words = ctx.split()
        cut = int(rng.integers(0, len(words)))
        out.append((q, " ".join(words[cut:] + words[:cut])))
    return out


def test_concurrent_requests_share_model_calls_and_keep_their_answers(qa):
    pairs = _distinct_pairs(20)
    app = create_app(qa, max_batch=32, max_wait_ms=50)
    responses = asyncio.run(_ask_concurrently(app, pairs, top_k=2))
    stats = app.state.batcher.stats()
    assert stats["questions"] == 20
    assert stats["model_calls"] < 20 and stats["largest_batch"] > 1, stats
    for (q, x), r in zip(pairs, responses):
        assert r.status_code == 200
        assert_same_answers(r.json()["answers"], qa(q, x, top_k=2), exact=False)


def test_max_batch_caps_the_batches(qa):
    pairs = _distinct_pairs(10)
    app = create_app(qa, max_batch=3, max_wait_ms=50)
    responses = asyncio.run(_ask_concurrently(app, pairs))
    stats = app.state.batcher.stats()
    assert all(r.status_code == 200 for r in responses)
    # at least 3 + 3 + 3 + 1; the first question may go alone (a lone caller never waits)
    assert stats["largest_batch"] == 3 and 4 <= stats["model_calls"] <= 5, stats

    app = create_app(qa, max_batch=1, max_wait_ms=50)  # batching off: one call per question
    asyncio.run(_ask_concurrently(app, pairs[:5]))
    assert app.state.batcher.stats() == {"model_calls": 5, "questions": 5, "largest_batch": 1, "pending": 0}


def test_a_lone_client_does_not_wait_for_company(qa):
    app = create_app(qa, max_batch=32, max_wait_ms=2_000)
    started = time.perf_counter()
    with TestClient(app) as c:
        for q, x in _distinct_pairs(3):  # one after another: never anyone to batch with
            assert c.post("/v1/answer", json={"question": q, "context": x}).status_code == 200
    assert time.perf_counter() - started < 2.0  # waiting 2 s for company even once would exceed it
    assert app.state.batcher.stats()["model_calls"] == 3


# -- command line ---------------------------------------------------------------------


def test_cli_serve_flags_and_missing_extra(monkeypatch, capsys):
    import pocketqa.cli.main as cli
    from pocketqa.serve import server as serve

    args = cli.build_parser().parse_args(["serve", "--model", "m", "--port", "9001", "--max-batch", "1", "--api-key", "k"])
    assert (args.port, args.max_batch, args.api_key, args.host, args.max_wait_ms) == (9001, 1, "k", "127.0.0.1", 5.0)
    # Without FastAPI installed the command says which extra to install, in one line.
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r"pip install 'pocketqa\[serve\]'"):
        serve.serve("m")
    assert cli.main(["serve", "--model", "m"]) == 2
    assert "pocketqa[serve]" in capsys.readouterr().err


def test_serves_an_exported_onnx_model(tiny_bert_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from pocketqa.export.exporter import export_model

    onnx_dir = tmp_path / "onnx"
    export_model(tiny_bert_dir, onnx_dir, optimize=False)
    qa = QuestionAnswerer.from_pretrained(onnx_dir)
    with TestClient(create_app(qa, model_dir=onnx_dir)) as c:
        info = c.get("/v1/model").json()
        assert info["backend"] == "onnx" and info["size_mb"] == pytest.approx(dir_size_mb(onnx_dir), abs=1e-3)
        question, context = PAIRS[1]
        body = c.post("/v1/answer", json={"question": question, "context": context, "top_k": 3}).json()
        assert_same_answers(body["answers"], qa(question, context, top_k=3))


def test_question_of_a_client_that_left_is_never_run(qa):
    slow = QuestionAnswerer(SlowBackend(qa.backend), qa.tokenizer, window=qa.window, name="slow")
    app = create_app(slow, max_batch=1, max_wait_ms=0)
    body = json.dumps({"question": PAIRS[0][0], "context": PAIRS[0][1]}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/answer", "raw_path": b"/v1/answer", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("test", 80),
    }

    async def scenario():
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():  # the raw client: sends its body, then hangs up when told
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            first = asyncio.ensure_future(c.post("/v1/answer", content=body, headers={"content-type": "application/json"}))
            await asyncio.sleep(0.1)  # the first question is in the model now
            leaver = asyncio.ensure_future(app(scope, receive, send))
            await asyncio.sleep(0.05)
            gone.set()  # ...and the second client leaves while its question waits
            await leaver
            r = await first
        await app.state.batcher.stop()
        return r, sent

    r, sent = asyncio.run(scenario())
    assert r.status_code == 200
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    assert app.state.batcher.stats() == {"model_calls": 1, "questions": 1, "largest_batch": 1, "pending": 0}


# -- inputs and settings that used to give 500s, hangs or a traceback at startup ---------


QUESTION, CONTEXT = CONTEXTS[1][2][0][0], CONTEXTS[1][1]
JSON = {"content-type": "application/json"}


def test_lone_surrogate_is_422_naming_the_field(qa):
    # json.loads turns "\ud800" into a lone surrogate, which the tokenizer cannot take.
    with TestClient(create_app(qa), raise_server_exceptions=False) as c:
        r = c.post("/v1/answer", content=b'{"question": "Who \\ud800?", "context": "Ann wrote it."}', headers=JSON)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "question: lone surrogate \\ud800 at character 4 (not valid text)"
        body = b'{"items": [{"question": "Who?", "context": "Ann wrote it."}, {"question": "Who?", "context": "A \\udc00"}]}'
        r = c.post("/v1/answer/batch", content=body, headers=JSON)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "items.1.context: lone surrogate \\udc00 at character 2 (not valid text)"
        # Astral characters (a valid surrogate pair in JSON) are fine.
        r = c.post("/v1/answer", content=b'{"question": "Who \\ud83d\\ude00?", "context": "Ann wrote it."}', headers=JSON)
        assert r.status_code == 200, r.text


def test_bad_question_does_not_fail_the_questions_batched_with_it(qa):
    slow = QuestionAnswerer(SlowBackend(qa.backend), qa.tokenizer, window=qa.window, name="slow")
    app = create_app(slow, max_batch=8, max_wait_ms=50)
    bad = b'{"question": "Who \\ud800?", "context": "Ann wrote it."}'

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            first = asyncio.ensure_future(c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}))
            await asyncio.sleep(0.1)  # the model is busy: the next two queue up together
            good, poisoned = await asyncio.gather(
                c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}),
                c.post("/v1/answer", content=bad, headers=JSON),
            )
            await first
        await app.state.batcher.stop()
        return good, poisoned

    good, poisoned = asyncio.run(scenario())
    assert good.status_code == 200, good.text  # used to be a 500: its batch held the bad question
    assert good.json()["answers"][0]["answer"] == qa(QUESTION, CONTEXT)["answer"]
    assert poisoned.status_code == 422


@pytest.mark.parametrize("wait", [math.nan, math.inf])
def test_non_finite_max_wait_is_a_config_error(qa, wait):
    # nan/inf used to be accepted, and then concurrent requests never got an answer.
    with pytest.raises(ConfigError, match="max_wait_ms must be a finite number >= 0"):
        create_app(qa, max_wait_ms=wait)


def test_port_in_use_is_one_line_and_exit_2_before_the_model_loads(tiny_bert_dir, monkeypatch, capsys):
    import uvicorn

    import pocketqa.cli.main as cli

    def loaded(*args, **kwargs):
        raise AssertionError("the model must not load when the port is taken")

    monkeypatch.setattr(QuestionAnswerer, "from_pretrained", loaded)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["serve", "--model", str(tiny_bert_dir), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err, err


@pytest.mark.parametrize(
    "body,detail",
    [
        (b'{"question": "caf\xe9?", "context": "Ann wrote it."}', "body: invalid JSON, not UTF-8 at byte 17"),
        (b"[" * 100_000 + b"]" * 100_000, "body: invalid JSON, nested too deeply"),
    ],
)
def test_unreadable_body_is_422_saying_why(qa, body, detail):
    # A client sending Latin-1 text used to get a bare 400 "There was an error parsing the body".
    with TestClient(create_app(qa), raise_server_exceptions=False) as c:
        r = c.post("/v1/answer", content=body, headers=JSON)
        assert r.status_code == 422 and r.json()["detail"].startswith(detail), r.text
        # Other HTTP errors keep their status, detail and headers.
        assert c.get("/nope").json() == {"detail": "Not Found"}


@pytest.mark.parametrize("key", ["ключ", "s3cret\n", " s3cret"])
def test_api_key_no_header_can_carry_is_a_config_error(qa, key):
    # Header bytes arrive as Latin-1 with surrounding spaces stripped: such a key never
    # matched, so the server answered every /v1 request with 401.
    with pytest.raises(ConfigError, match="must be printable ASCII") as e:
        create_app(qa, api_key=key)
    assert key.strip() not in str(e.value)  # the key stays secret


class PoisonedBackend(SlowBackend):
    """Slow like SlowBackend, and fails any call whose windows hold the token ``poison``."""

    def __init__(self, real, poison: int):
        super().__init__(real)
        self.poison = poison

    def __call__(self, batch):
        if (batch["input_ids"] == self.poison).any():
            time.sleep(0.3)
            raise RuntimeError("the model cannot take this window")
        return super().__call__(batch)


def test_model_failure_on_one_question_spares_the_questions_batched_with_it(qa):
    bad_question, bad_context = CONTEXTS[0][2][0][0], CONTEXTS[0][1]
    good_ids = set(qa.tokenizer(QUESTION, CONTEXT)["input_ids"])
    poison = next(i for i in qa.tokenizer(bad_question, bad_context)["input_ids"] if i not in good_ids)
    backend = PoisonedBackend(qa.backend, poison)
    app = create_app(QuestionAnswerer(backend, qa.tokenizer, window=qa.window, name="poisoned"), max_batch=8,
                     max_wait_ms=50)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            first = asyncio.ensure_future(c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}))
            await asyncio.sleep(0.1)  # the model is busy: the next two queue up and share one call
            good, bad = await asyncio.gather(
                c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}),
                c.post("/v1/answer", json={"question": bad_question, "context": bad_context}),
            )
            await first
        await app.state.batcher.stop()
        return good, bad

    good, bad = asyncio.run(scenario())
    assert good.status_code == 200, good.text  # used to be a 500, like its neighbour's
    assert good.json()["answers"][0]["answer"] == qa(QUESTION, CONTEXT)["answer"]
    assert bad.status_code == 500 and "Traceback" not in bad.text


def test_stopping_the_batcher_answers_the_question_in_the_model(qa):
    slow = QuestionAnswerer(SlowBackend(qa.backend), qa.tokenizer, window=qa.window, name="slow")
    app = create_app(slow, max_batch=1, max_wait_ms=0)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            asked = asyncio.ensure_future(c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}))
            queued = asyncio.ensure_future(c.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT}))
            await asyncio.sleep(0.1)  # the first question is in the model, the second queued
            await app.state.batcher.stop()
            # Both used to wait forever for a worker that was gone.
            return await asyncio.wait_for(asyncio.gather(asked, queued), timeout=5)

    for r in asyncio.run(scenario()):
        assert r.status_code == 503 and "shutting down" in r.json()["detail"], r.text


class OneWindowBackend:
    """A backend that is not batch-invariant (as int8 ONNX graphs); records its calls' batch sizes."""

    batch_invariant = False

    def __init__(self, real):
        self.real = real
        self.input_names = real.input_names
        self.rows: list[int] = []

    def __call__(self, batch):
        self.rows.append(len(batch["input_ids"]))
        return self.real(batch)


def test_a_backend_that_is_not_batch_invariant_is_never_held_for_company(qa):
    # A long wait window and concurrent clients: a batching server would hold the questions
    # to share calls. This backend gains nothing from that, so each request goes alone.
    backend = OneWindowBackend(qa.backend)
    one_window = QuestionAnswerer(backend, qa.tokenizer, window=qa.window, name="int8-like")
    app = create_app(one_window, max_batch=32, max_wait_ms=60_000)
    assert not app.state.batcher.batches
    pairs = _distinct_pairs(8)
    responses = asyncio.run(_ask_concurrently(app, pairs, top_k=2))
    assert app.state.batcher.stats() == {"model_calls": 8, "questions": 8, "largest_batch": 1, "pending": 0}
    assert set(backend.rows) == {1}
    for (q, x), r in zip(pairs, responses):
        assert r.status_code == 200
        assert_same_answers(r.json()["answers"], qa(q, x, top_k=2), exact=False)
    # A batch request is still answered in one call: its questions came together.
    with TestClient(app) as c:
        items = [{"question": q, "context": x} for q, x in pairs[:3]]
        assert c.post("/v1/answer/batch", json={"items": items}).status_code == 200
    assert app.state.batcher.stats()["model_calls"] == 9 and app.state.batcher.stats()["largest_batch"] == 3


def test_a_backend_that_is_not_batch_invariant_still_refuses_a_full_queue(qa):
    one_window = QuestionAnswerer(OneWindowBackend(qa.backend), qa.tokenizer, window=qa.window, name="int8-like")
    with TestClient(create_app(one_window, limits=Limits(max_queue=2))) as c:
        items = [{"question": "Where?", "context": "Paris is big."}] * 3
        r = c.post("/v1/answer/batch", json={"items": items})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.post("/v1/answer/batch", json={"items": items[:2]}).status_code == 200
