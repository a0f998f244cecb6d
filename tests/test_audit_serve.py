"""Server audit: inputs and settings that used to give 500s, hangs or a traceback at startup."""

import asyncio
import math
import socket
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import CONTEXTS, SlowBackend  # noqa: E402
from pocketqa.inference.answerer import QuestionAnswerer  # noqa: E402
from pocketqa.errors import ConfigError  # noqa: E402
from pocketqa.serve.app import create_app  # noqa: E402

QUESTION, CONTEXT = CONTEXTS[1][2][0][0], CONTEXTS[1][1]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def qa(tiny_bert_dir):
    return QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")


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
