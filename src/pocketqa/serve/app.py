"""HTTP adapter over QuestionAnswerer: a JSON API with dynamic micro-batching, and a try-it page.

Requests that arrive together are answered in shared model batches: every question goes
into one asyncio queue, and a single worker task takes up to ``max_batch`` questions (or
whatever arrived within ``max_wait_ms`` of the first one), runs them through
``QuestionAnswerer.decode_examples`` in a worker thread so the event loop keeps accepting
requests, and hands each caller its own decoding. Per-request ``top_k``/``abstain`` are
applied afterwards, when formatting, exactly as ``QuestionAnswerer.__call__`` does.

This module imports nothing from the training code; FastAPI and uvicorn are the ``serve``
extra and are imported only when a server is built.
"""

# No "from __future__ import annotations": FastAPI reads the (local) request models from
# the endpoint annotations at runtime.
import asyncio
import errno
import json
import logging
import math
import os
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.decode import Decoded
from pocketqa.errors import ConfigError, PocketQAError, missing_extra
from pocketqa.models import dir_size_mb
from pocketqa.data.squad import Example, unencodable_at

logger = logging.getLogger("pocketqa.serve.app")

API_KEY_ENV = "POCKETQA_API_KEY"
API_KEY_HEADER = "X-API-Key"
MAX_TOP_K = 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond gets a 4xx with a message naming the field.

    Attributes:
        max_body_bytes: Largest request body (413 beyond).
        max_context_chars: Longest context, in characters.
        max_question_chars: Longest question, in characters.
        max_batch_items: Most items in one ``/v1/answer/batch`` request.
        max_queue: Most questions waiting for the model before new ones get 503 (back-pressure).
    """

    max_body_bytes: int = 2_000_000
    max_context_chars: int = 20_000
    max_question_chars: int = 1_000
    max_batch_items: int = 64
    max_queue: int = 4_096

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, found {value}" for name, value in vars(self).items() if value < 1]
        if problems:
            raise ConfigError("invalid server limits: " + "; ".join(problems))


# -- batching -------------------------------------------------------------------------


class MicroBatcher:
    """Collects questions from concurrent requests into shared model calls.

    One worker task per event loop takes the first waiting question and everything queued
    behind it (up to ``max_batch``), and runs the batch in a single-thread executor (the
    model is never called from two threads at once). Under concurrent load (the previous
    batch held more than one question) it also waits up to ``max_wait_ms`` for stragglers;
    a lone client never waits: its batches of one go straight to the model.

    Attributes:
        model_calls: How many batches went to the model (tests compare it with requests).
        questions: How many questions were answered.
        largest_batch: The largest batch seen so far.
        pending: Questions submitted and not answered yet (queued or in the model).
    """

    def __init__(self, qa: QuestionAnswerer, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 4096):
        problems = []
        if max_batch < 1:
            problems.append(f"max_batch must be >= 1, found {max_batch}")
        # nan or inf would make the worker wait forever for stragglers (or die): requests hang.
        if not math.isfinite(max_wait_ms) or max_wait_ms < 0:
            problems.append(f"max_wait_ms must be a finite number >= 0, found {max_wait_ms}")
        if problems:
            raise ConfigError("; ".join(problems))
        self.qa = qa
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.model_calls = 0
        self.questions = 0
        self.largest_batch = 0
        self.pending = 0
        self._last_batch = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketqa-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.Queue:
        # Started lazily on the running loop: test clients may run each request on a new loop.
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._work(self._queue), name="pocketqa-batcher")
        return self._queue

    async def submit(self, examples: list[Example]) -> list[Decoded]:
        """Queues questions and waits for their decodings (in the same order).

        Raises:
            BusyError: When the queue already holds ``max_queue`` questions.
        """
        queue = self._ensure_worker()
        if queue.qsize() + len(examples) > self.max_queue:
            raise BusyError(f"{queue.qsize()} questions are waiting for the model; retry shortly")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in examples]
        for example, future in zip(examples, futures):
            queue.put_nowait((example, future))
        self.pending += len(examples)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            self.pending -= len(examples)

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Example, asyncio.Future]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        # Waiting only pays when other callers are about to send: a lone client would
        # just add max_wait to every answer.
        deadline = loop.time() + (self.max_wait if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:  # whatever is already queued joins without waiting
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        # A caller that went away (client disconnected) cancels its future: skip its question.
        return [(ex, fut) for ex, fut in batch if not fut.done()]

    async def _work(self, queue: asyncio.Queue) -> None:
        batch: list[tuple[Example, asyncio.Future]] = []
        try:
            while True:
                batch = await self._collect(queue)
                if not batch:
                    continue
                try:
                    await self._answer(batch)
                except Exception as e:  # any model failure goes to the callers, never kills the worker
                    if len(batch) == 1:
                        _fail(batch, e)
                        continue
                    # A question the model fails on must not fail the questions batched with
                    # it (other clients): answer each alone, so only its own caller gets the error.
                    for item in batch:
                        try:
                            await self._answer([item])
                        except Exception as e:
                            _fail([item], e)
        finally:
            # Cancelled (stop) or dying: nobody may wait forever, in the model or in the queue.
            _fail(batch, BusyError("the server is shutting down"))
            while not queue.empty():
                _fail([queue.get_nowait()], BusyError("the server is shutting down"))

    async def _answer(self, batch: list[tuple[Example, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        examples = [ex for ex, _ in batch]
        decoded = await loop.run_in_executor(self._executor, self.qa.decode_examples, examples)
        self.model_calls += 1
        self.questions += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        self._last_batch = len(batch)
        for (_, fut), d in zip(batch, decoded):
            if not fut.done():
                fut.set_result(d)

    async def stop(self) -> None:
        """Cancels the worker of the current loop; questions in flight or queued get an error."""
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    def stats(self) -> dict:
        return {
            "model_calls": self.model_calls,
            "questions": self.questions,
            "largest_batch": self.largest_batch,
            "pending": self.pending,
        }


def _fail(batch: list[tuple[Example, asyncio.Future]], error: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)


class BusyError(RuntimeError):
    """The server cannot take more questions right now (HTTP 503)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _unless_disconnected(request, awaitable):
    """Awaits ``awaitable``, cancelling it when the client disconnects first.

    A client that timed out must not cost model time: cancelling ``MicroBatcher.submit``
    cancels its futures, and the worker skips cancelled questions.

    Raises:
        ClientGone: The client went away first.
    """
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        # The body is already read, so the next ASGI message is the disconnect (servers and
        # test clients send it only once the client is gone or the response is complete).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the request handler itself was cancelled
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone


# -- answers --------------------------------------------------------------------------


def format_answers(d: Decoded, top_k: int, abstain: bool, threshold: float) -> tuple[list[dict], bool]:
    """One decoding as the API returns it: (answers best first, abstained).

    Uses the formatting of ``QuestionAnswerer.__call__`` so that the API and the Python
    call always agree.
    """
    result = QuestionAnswerer._format(d, top_k, abstain, threshold)
    answers = [result] if isinstance(result, dict) else result
    answers = [
        {
            "answer": a["answer"],
            "start": a["start"],
            "end": a["end"],
            "score": float(a["score"]),
            "null_odds": float(a["null_odds"]),
        }
        for a in answers
    ]
    return answers, answers[0]["start"] is None


def _item_problems(question: str, context: str, limits: Limits, where: str) -> list[str]:
    problems = []
    if not question.strip():
        problems.append(f"{where}question: must not be empty")
    elif len(question) > limits.max_question_chars:
        problems.append(
            f"{where}question: {len(question)} characters, at most {limits.max_question_chars} allowed"
        )
    if not context.strip():
        problems.append(f"{where}context: must not be empty")
    elif len(context) > limits.max_context_chars:
        problems.append(
            f"{where}context: {len(context)} characters, at most {limits.max_context_chars} allowed; "
            "split the passage"
        )
    # JSON may carry a lone surrogate ("\ud800"); the tokenizer rejects it, which would fail
    # every question micro-batched with this one (500s for other clients), so refuse it here.
    for field, text in (("question", question), ("context", context)):
        if (bad := unencodable_at(text)) is not None:
            problems.append(f"{where}{field}: lone surrogate \\u{ord(text[bad]):04x} at character {bad} (not valid text)")
    return problems


# -- the app --------------------------------------------------------------------------


def _schemas():
    """The pydantic request/response models (built here so pydantic is imported lazily)."""
    from pydantic import BaseModel, Field

    class AnswerRequest(BaseModel):
        question: str = Field(..., description="The question.", examples=["Who wrote it?"])
        context: str = Field(..., description="The passage to find the answer in.", examples=["It was written by Ann."])
        top_k: int = Field(1, ge=1, le=MAX_TOP_K, description="How many answers to return, best first.")
        abstain: bool = Field(
            True, description="Put the no-answer first when the model judges the passage holds no answer."
        )

    class Answer(BaseModel):
        answer: str = Field(..., description='The answer text ("" for the no-answer).')
        start: int | None = Field(..., description="Character offset of the answer in the context (null for no-answer).")
        end: int | None = Field(..., description="End character offset, exclusive (null for no-answer).")
        score: float = Field(..., description="Softmax weight of this answer among the n-best.")
        null_odds: float = Field(..., description="Null score minus best span score; larger = more likely no answer.")

    class AnswerResponse(BaseModel):
        answers: list[Answer]
        abstained: bool = Field(..., description="True when the first answer is the no-answer.")

    class BatchRequest(BaseModel):
        items: list[AnswerRequest]

    class BatchResponse(BaseModel):
        results: list[AnswerResponse]

    return AnswerRequest, AnswerResponse, BatchRequest, BatchResponse


def _page() -> str:
    return resources.files("pocketqa").joinpath("serve/static/index.html").read_text(encoding="utf-8")


def create_app(
    qa: QuestionAnswerer,
    api_key: str | None = None,
    limits: Limits = Limits(),
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    model_dir: str | os.PathLike | None = None,
):
    """Builds the FastAPI app serving ``qa``.

    Args:
        qa: Any loaded QuestionAnswerer (PyTorch or ONNX Runtime backend).
        api_key: When set, ``/v1/*`` requires header ``X-API-Key`` with this value.
        limits: Request limits (see ``Limits``).
        max_batch: Most questions per model call.
        max_wait_ms: How long the first question of a batch waits for company.
        model_dir: The model directory, to report its size in ``/v1/model``.

    Returns:
        The app; ``app.state.batcher`` is its MicroBatcher (with call counters).
    """
    try:
        from contextlib import asynccontextmanager

        from fastapi import Depends, FastAPI, HTTPException, Request
        from fastapi.exception_handlers import http_exception_handler
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from fastapi.security import APIKeyHeader
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError:
        raise missing_extra("fastapi", "serve") from None

    check_api_key(api_key)
    AnswerRequest, AnswerResponse, BatchRequest, BatchResponse = _schemas()
    batcher = MicroBatcher(qa, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=limits.max_queue)
    size_mb = round(dir_size_mb(model_dir), 3) if model_dir is not None and Path(model_dir).is_dir() else None

    @asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.stop()

    app = FastAPI(
        title="pocketqa",
        version="1",
        description="Extractive question answering with abstention (SQuAD 2.0 style).",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.qa = qa
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when the server has a key.")

    def check_key(key: str | None = Depends(key_header)) -> None:
        if api_key is None:
            return
        # Constant-time comparison: the time taken must not reveal how much of the key matched.
        if key is None or not secrets.compare_digest(key.encode(), api_key.encode()):
            raise HTTPException(401, detail=f"missing or wrong API key; send it in the {API_KEY_HEADER} header")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        # One readable line naming each bad field, instead of pydantic's list of dicts.
        messages = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # loc is ("body", character offset)
                reason = (err.get("ctx") or {}).get("error", "cannot parse")
                messages.append(f"body: invalid JSON at character {err['loc'][-1]} ({reason})")
                continue
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            messages.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(messages)})

    @app.exception_handler(StarletteHTTPException)  # the class FastAPI's own 400s (and 404s) raise
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI answers a body json.loads cannot even read (bytes that are not UTF-8, nesting
        # deeper than Python's recursion limit) with a bare 400 "There was an error parsing
        # the body"; say what is wrong, as for any other invalid JSON.
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            detail = f"body: invalid JSON, not UTF-8 at byte {cause.start} ({cause.reason}); encode the body as UTF-8"
            return JSONResponse(status_code=422, content={"detail": detail})
        if exc.status_code == 400 and isinstance(cause, RecursionError):
            return JSONResponse(status_code=422, content={"detail": "body: invalid JSON, nested too deeply"})
        return await http_exception_handler(request, exc)

    async def answer_many(request: Request, items: list) -> list[dict]:
        examples = [Example(id=str(i), title="", context=it.context, question=it.question) for i, it in enumerate(items)]
        try:
            decoded = await _unless_disconnected(request, batcher.submit(examples))
        except ClientGone:
            # Its questions left the queue unanswered; nobody reads this status (nginx's 499).
            raise HTTPException(499, detail="client closed the request") from None
        except BusyError as e:
            raise HTTPException(503, detail=str(e), headers={"Retry-After": "1"}) from None
        except Exception:
            # Never leak a traceback (paths, code) to clients; the log has it.
            logger.exception("model failure while answering %d question(s)", len(examples))
            raise HTTPException(500, detail="internal error while answering; see the server log") from None
        results = []
        for it, d in zip(items, decoded):
            answers, abstained = format_answers(d, it.top_k, it.abstain, qa.threshold)
            results.append({"answers": answers, "abstained": abstained})
        return results

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(check_key)])
    async def answer(req: AnswerRequest, request: Request):
        """Answers one question about one passage."""
        problems = _item_problems(req.question, req.context, limits, "")
        if problems:
            raise HTTPException(422, detail="; ".join(problems))
        return (await answer_many(request, [req]))[0]

    @app.post("/v1/answer/batch", response_model=BatchResponse, dependencies=[Depends(check_key)])
    async def answer_batch(req: BatchRequest, request: Request):
        """Answers many questions (each with its own passage, top_k and abstain)."""
        if not req.items:
            raise HTTPException(422, detail="items: must not be empty")
        if len(req.items) > limits.max_batch_items:
            raise HTTPException(
                422, detail=f"items: {len(req.items)} given, at most {limits.max_batch_items} per request; split the batch"
            )
        problems = [p for i, it in enumerate(req.items) for p in _item_problems(it.question, it.context, limits, f"items.{i}.")]
        if problems:
            raise HTTPException(422, detail="; ".join(problems))
        return {"results": await answer_many(request, req.items)}

    @app.get("/v1/model", dependencies=[Depends(check_key)])
    async def model_info():
        """What is being served: name, size, metrics and threshold from pocketqa.json, backend."""
        return {
            "name": qa.name,
            "size_mb": size_mb,
            "backend": type(qa.backend).__name__.removesuffix("Backend").lower(),
            "threshold": qa.threshold,
            "metrics": qa.meta.get("metrics", {}),
            "window": qa.window.to_dict(),
            "batching": {"max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000.0},
            "limits": {**vars(limits), "max_top_k": MAX_TOP_K},
        }

    @app.get("/health")
    async def health():
        """Liveness: always open, even when an API key is set."""
        return {"status": "ok", "model": qa.name, "api_key_required": api_key is not None, **batcher.stats()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    return app


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``.

    Checks the declared Content-Length first, and also counts the bytes actually received,
    so chunked uploads without a length cannot get around the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes; send fewer or shorter items"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": self._message()})
            return
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPExceptions raised while reading the body through as they are.
                    raise HTTPException(413, detail=self._message())
            return message

        await self.app(scope, counting_receive, send)


async def _send_json(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def resolve_api_key(api_key: str | None) -> str | None:
    """The key given on the command line, else $POCKETQA_API_KEY, else None (no key)."""
    return api_key or os.environ.get(API_KEY_ENV) or None


def check_api_key(api_key: str | None) -> None:
    """Raises ConfigError for a key no X-API-Key header can carry (the key is never printed).

    Servers decode header bytes as Latin-1 and strip surrounding spaces, so such a key could
    never match: every ``/v1`` request would get 401.
    """
    if api_key is not None and not (api_key.isascii() and api_key.isprintable() and api_key == api_key.strip()):
        raise ConfigError(
            f"the API key ({len(api_key)} characters) must be printable ASCII without leading or trailing "
            f"spaces, or no {API_KEY_HEADER} header can carry it; e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'"
        )


def check_can_listen(host: str, port: int) -> None:
    """Binds ``host:port`` once, as uvicorn will, and lets go.

    Raises:
        PocketQAError: The address is in use, not ours, or the host does not resolve.
    """
    # Mirrors asyncio's create_server, which uvicorn uses: every address of the host, reuse
    # on, IPv6 sockets v6-only, addresses of a disabled family (EADDRNOTAVAIL) skipped.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as e:
                    if e.errno != errno.EADDRNOTAVAIL:
                        raise
    except OSError as e:
        raise PocketQAError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host"
        ) from None


def serve(
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    threads: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    limits: Limits = Limits(),
    log_level: str = "info",
    scoring: str = "logits",
    align_to_words: bool = False,
    n_best: int = 20,
    max_answer_length: int = 30,
    **window,
) -> None:
    """Loads a model and serves it with uvicorn until interrupted (``pocketqa serve``).

    The API key comes from ``api_key``, else the environment variable POCKETQA_API_KEY.
    ``window`` takes max_seq_length / doc_stride / max_query_length overrides.
    """
    try:
        import fastapi  # noqa: F401  (checked before the slow model load)
        import uvicorn
    except ImportError as e:
        raise missing_extra(e.name if e.name in ("fastapi", "uvicorn") else "fastapi", "serve") from None
    from pocketqa.models import resolve_model

    api_key = resolve_api_key(api_key)
    check_api_key(api_key)  # these two before the slow model load (uvicorn would exit 3 after it)
    check_can_listen(host, port)
    path = resolve_model(model)
    qa = QuestionAnswerer.from_pretrained(path, device=device, threads=threads, batch_size=batch_size,
                                          scoring=scoring, align_to_words=align_to_words, n_best=n_best,
                                          max_answer_length=max_answer_length, **window)
    app = create_app(qa, api_key=api_key, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms, model_dir=path)
    auth = "on (X-API-Key)" if api_key else "off"
    print(f"serving {qa.name} on http://{host}:{port}  (docs: /docs, API key: {auth}, max batch {max_batch})", flush=True)
    # One process: batching needs every request to reach the same queue.
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
