"""``pocketqa serve``: a model behind the HTTP API."""

from __future__ import annotations

from pocketqa.cli.common import decoding_kwargs, model_args, port, window_args, window_kwargs

def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (JSON API with batching, /docs, a page at /)")
    model_args(p)
    window_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--api-key", default=None, help="require this X-API-Key on /v1/* (default: $POCKETQA_API_KEY)")
    p.add_argument("--max-batch", type=int, default=32, help="most questions per model call (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="under concurrent load, how long a batch waits for more questions")
    p.add_argument("--max-context-chars", type=int, default=20_000)
    p.add_argument("--max-question-chars", type=int, default=1_000)
    p.add_argument("--max-batch-items", type=int, default=64, help="most items in one /v1/answer/batch request")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from pocketqa.serve.limits import Limits
    from pocketqa.serve.server import serve

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_context_chars=args.max_context_chars,
        max_question_chars=args.max_question_chars,
        max_batch_items=args.max_batch_items,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        device=args.device,
        batch_size=args.batch_size,
        limits=limits,
        log_level=args.log_level,
        domain=args.domain,
        **decoding_kwargs(args),
        **window_kwargs(args),
    )
    return 0




def register(sub) -> None:
    add_serve(sub)
