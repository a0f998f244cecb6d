"""What one request may hold: the server's limits, the per-question checks and the body-size middleware.

Anything beyond a limit gets a 4xx with a message naming the field, before any question
reaches the model (a bad question must not fail the questions batched with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pocketqa.data.squad import unencodable_at
from pocketqa.errors import ConfigError


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


def item_problems(question: str, context: str, limits: Limits, where: str) -> list[str]:
    """What is wrong with one question/context pair, one message per problem ([] when none).

    Args:
        question: The question text.
        context: The passage text.
        limits: The server's limits.
        where: Prefix naming the item in the messages ("" or "items.3.").
    """
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
