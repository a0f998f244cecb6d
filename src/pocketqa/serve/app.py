"""HTTP adapter over QuestionAnswerer: a JSON API and a try-it page (``create_app``).

Requests that arrive together are answered in shared model batches (batcher.py); the
per-request ``top_k``/``abstain`` are applied afterwards, when formatting, exactly as
``QuestionAnswerer.__call__`` does. Running the app under uvicorn is server.py.

This module imports nothing from the training code; FastAPI is the ``serve`` extra and is
imported only when an app is built.
"""

# No "from __future__ import annotations": FastAPI reads the (local) request models from
# the endpoint annotations at runtime.
import logging
import os
import secrets
from importlib import resources
from pathlib import Path

from pocketqa.data.squad import Example
from pocketqa.errors import ConfigError, missing_extra
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.modeldir import stored_metrics
from pocketqa.models import dir_size_mb
from pocketqa.serve.batcher import BusyError, ClientGone, MicroBatcher, unless_disconnected
from pocketqa.serve.limits import BodyLimit, Limits, item_problems

logger = logging.getLogger("pocketqa.serve.app")

API_KEY_HEADER = "X-API-Key"
MAX_TOP_K = 20
SWAGGER_URL = "/static/swagger"


def _schemas():
    """The pydantic request/response models (built here so pydantic is imported lazily)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

    # Requests are strict: a misspelt field ("topk") is refused by name instead of being
    # ignored, and "3" or true is not silently taken for top_k=3 (nor 0 or "false" for a bool).
    class AnswerRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        question: StrictStr = Field(..., description="The question.", examples=["Who wrote it?"])
        context: StrictStr = Field(
            ..., description="The passage to find the answer in.", examples=["It was written by Ann."]
        )
        top_k: StrictInt = Field(1, ge=1, le=MAX_TOP_K, description="How many answers to return, best first.")
        abstain: StrictBool = Field(
            True, description="Put the no-answer first when the model judges the passage holds no answer."
        )

    class Answer(BaseModel):
        answer: str = Field(..., description='The answer text ("" for the no-answer).')
        start: int | None = Field(..., description="Character offset of the answer in the context (null for no-answer).")
        end: int | None = Field(..., description="End character offset, exclusive (null for no-answer).")
        score: float = Field(
            ...,
            description="A span: its weight among the n-best. The no-answer: 1 - answerability "
            "(above 0.5 when the model abstains).",
        )
        null_odds: float = Field(..., description="Null score minus best span score; larger = more likely no answer.")

    class AnswerResponse(BaseModel):
        answers: list[Answer]
        abstained: bool = Field(..., description="True when the first answer is the no-answer.")
        answerability: float = Field(
            ...,
            description="How sure the model is that the passage answers the question, 0.5 at its calibrated "
            "threshold: at least 0.5 exactly when it answers (sigmoid(threshold - null_odds)).",
        )
        threshold: float = Field(..., description="The no-answer threshold on null_odds the decision used.")

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        items: list[AnswerRequest]

    class BatchResponse(BaseModel):
        results: list[AnswerResponse]

    return AnswerRequest, AnswerResponse, BatchRequest, BatchResponse


def is_json_content_type(value: str | None) -> bool:
    """Whether FastAPI reads a body with this Content-Type as JSON (not when the header is absent)."""
    if not value:
        return False
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _swagger_dir() -> Path:
    """The packaged Swagger UI files (a real directory: StaticFiles serves from disk)."""
    return Path(str(resources.files("pocketqa").joinpath("serve/static/swagger")))


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
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.responses import HTMLResponse, JSONResponse
        from fastapi.security import APIKeyHeader
        from fastapi.staticfiles import StaticFiles
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError:
        raise missing_extra("fastapi", "serve") from None

    check_api_key(api_key)
    AnswerRequest, AnswerResponse, BatchRequest, BatchResponse = _schemas()
    batcher = MicroBatcher(qa, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=limits.max_queue)
    size_mb = round(dir_size_mb(model_dir), 3) if model_dir is not None and Path(model_dir).is_dir() else None
    metrics = stored_metrics(model_dir, qa.meta) or {}

    @asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.stop()

    app = FastAPI(
        title="pocketqa",
        version="1",
        description="Extractive question answering with abstention (SQuAD 2.0 style).",
        lifespan=lifespan,
        docs_url=None,  # served below from the packaged Swagger UI, not from a CDN
        redoc_url=None,  # ReDoc only loads from a CDN: blank on an air-gapped server, so not offered
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
        # FastAPI hands a body of any other Content-Type (curl -d sends a form) to the model
        # unparsed, which pydantic reports as "Input should be a valid dictionary".
        content_type = request.headers.get("content-type")
        if request.method == "POST" and not is_json_content_type(content_type):
            detail = (
                f"body: sent as {content_type or 'no Content-Type'}, expected JSON; "
                "add the header Content-Type: application/json"
            )
            return JSONResponse(status_code=415, content={"detail": detail})
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
            decoded = await unless_disconnected(request, batcher.submit(examples))
        except ClientGone:
            # Its questions left the queue unanswered; nobody reads this status (nginx's 499).
            raise HTTPException(499, detail="client closed the request") from None
        except BusyError as e:
            raise HTTPException(503, detail=str(e), headers={"Retry-After": "1"}) from None
        except Exception:
            # Never leak a traceback (paths, code) to clients; the log has it.
            logger.exception("model failure while answering %d question(s)", len(examples))
            raise HTTPException(500, detail="internal error while answering; see the server log") from None
        return [QuestionAnswerer.format_response(d, it.top_k, it.abstain, qa.threshold) for it, d in zip(items, decoded)]

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(check_key)])
    async def answer(req: AnswerRequest, request: Request):
        """Answers one question about one passage."""
        problems = item_problems(req.question, req.context, limits, "")
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
        problems = [p for i, it in enumerate(req.items) for p in item_problems(it.question, it.context, limits, f"items.{i}.")]
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
            "metrics": metrics,
            "window": qa.window.to_dict(),
            "batching": {"max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000.0},
            "limits": {**vars(limits), "max_top_k": MAX_TOP_K},
        }

    @app.get("/health")
    async def health():
        """Liveness: always open, even when an API key is set."""
        return {"status": "ok", "model": qa.name, "api_key_required": api_key is not None, **batcher.stats()}

    # Swagger UI ships inside the package (serve/static/swagger), so /docs works on a server
    # without internet access.
    app.mount(SWAGGER_URL, StaticFiles(directory=str(_swagger_dir())), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_URL}/favicon-32x32.png",
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    return app


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
