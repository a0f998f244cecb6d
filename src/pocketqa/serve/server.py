"""``pocketqa serve``: checks what can be checked before the slow model load, then runs uvicorn.

uvicorn is the ``serve`` extra and is imported only here, when a server starts.
"""

from __future__ import annotations

import errno
import os
import socket

from pocketqa.errors import PocketQAError, missing_extra
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.models import resolve_model
from pocketqa.serve.app import check_api_key, create_app
from pocketqa.serve.limits import Limits

API_KEY_ENV = "POCKETQA_API_KEY"


def resolve_api_key(api_key: str | None) -> str | None:
    """The key given on the command line, else $POCKETQA_API_KEY, else None (no key)."""
    return api_key or os.environ.get(API_KEY_ENV) or None


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
    allow_untrained_head: bool = False,
    domain: str | None = None,
    **window,
) -> None:
    """Loads a model and serves it with uvicorn until interrupted (``pocketqa serve``).

    The API key comes from ``api_key``, else the environment variable POCKETQA_API_KEY.
    ``window`` takes max_seq_length / doc_stride / max_query_length overrides; ``domain``
    picks a threshold calibrated for that domain (QuestionAnswerer.from_pretrained).
    """
    try:
        import fastapi  # noqa: F401  (checked before the slow model load)
        import uvicorn
    except ImportError as e:
        raise missing_extra(e.name if e.name in ("fastapi", "uvicorn") else "fastapi", "serve") from None

    api_key = resolve_api_key(api_key)
    check_api_key(api_key)  # these two before the slow model load (uvicorn would exit 3 after it)
    check_can_listen(host, port)
    path = resolve_model(model)
    qa = QuestionAnswerer.from_pretrained(path, device=device, threads=threads, batch_size=batch_size,
                                          scoring=scoring, align_to_words=align_to_words, n_best=n_best,
                                          max_answer_length=max_answer_length,
                                          allow_untrained_head=allow_untrained_head, domain=domain, **window)
    app = create_app(qa, api_key=api_key, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms, model_dir=path)
    auth = "on (X-API-Key)" if api_key else "off"
    print(f"serving {qa.name} on http://{host}:{port}  (docs: /docs, API key: {auth}, max batch {max_batch})", flush=True)
    # One process: batching needs every request to reach the same queue.
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
