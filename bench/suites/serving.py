"""Serving: ``pocketqa serve`` with micro-batching vs without, under 1 and N concurrent clients.

Starts two ``pocketqa serve`` subprocesses on free ports of 127.0.0.1 (the load goes
nowhere else): one batching (``--max-batch 32``) and the anchor without batching
(``--max-batch 1``). At every ``--levels`` value, that many concurrent clients (asyncio +
httpx) send real SQuAD 2.0 dev questions to ``/v1/answer``, each level bounded by a
request count and a time limit so that the run always ends; the two servers take turns
per round. Reported per level: requests/s, p50 / p99 latency, non-2xx and 5xx answers,
failed requests (connection errors, timeouts) and requests cut off by the time limit.

The default model is a random-weight MiniLM-L6 (answers are meaningless, timing is
real); ``--model DIR`` serves a real one, e.g. the bundled ``src/pocketqa/default_model``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import (
    REPO,
    Arm,
    Results,
    Sample,
    add_common_arguments,
    model_dir,
    say,
    setup,
    split_list,
    squad_file,
    take_turns,
)

HOST = "127.0.0.1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=1)
    p.add_argument("--model", default="minilm-l6", help="a random-weight shape or a model dir (default minilm-l6)")
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file the questions come from")
    p.add_argument("--levels", default="1,16,200", help="concurrent clients per level (default 1,16,200)")
    p.add_argument("--requests", default="1:150,16:400,200:600", help="requests per level, LEVEL:N,...")
    p.add_argument("--level-seconds", type=float, default=90.0, help="time limit of one level run")
    p.add_argument("--max-batch", type=int, default=32, help="--max-batch of the batching server")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=20, help="requests to each server before measuring")
    p.add_argument("--before-src", type=Path, default=None,
                   help="also run the batching server from this source tree (e.g. another checkout's src/), "
                        "as the arm 'batching (before)'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``pocketqa serve`` in a subprocess, stopped (SIGINT, then kill) on exit."""

    def __init__(self, model: str, max_batch: int, max_wait_ms: float, threads: int | None, device: str, log: Path,
                 src: Path = REPO / "src"):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "pocketqa", "serve", "--model", model, "--host", HOST, "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning",
               "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
        env.pop("POCKETQA_API_KEY", None)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with code {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"server not ready after {timeout:.0f} s; see {self.log.name}")

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Waits until the server has answered everything (cut-off requests keep it busy)."""
        deadline = time.monotonic() + timeout
        while self.stats()["pending"] and time.monotonic() < deadline:
            time.sleep(0.5)

    def __enter__(self) -> Server:
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


async def run_level(url: str, items: list[dict], clients: int, n_requests: int, seconds: float) -> Sample:
    """``clients`` workers share ``n_requests`` requests; everything stops after ``seconds``.

    Requests still in flight at the time limit are cancelled and counted as ``cut_off``;
    ``failed`` counts connection errors and timeouts before it.
    """
    import httpx
    import numpy as np

    latencies: list[float] = []
    statuses: list[int] = []
    failed = in_flight = next_index = 0
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)

    async def client_loop(client, deadline: float) -> None:
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
    return Sample(seconds=elapsed, work=len(statuses), extra={
        "requests": len(statuses), "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1), "non_2xx": sum(not 200 <= s < 300 for s in statuses),
        "status_5xx": sum(s >= 500 for s in statuses), "failed": failed, "cut_off": cut_off,
    })


def parse_counts(text: str, levels: list[int]) -> dict[int, int]:
    counts = {}
    for part in split_list(text):
        level, _, n = part.partition(":")
        counts[int(level)] = int(n)
    if missing := [lv for lv in levels if lv not in counts]:
        raise SystemExit(f"--requests has no count for level(s) {missing}; e.g. --requests 1:150,16:400,200:600")
    return counts


def run(args: argparse.Namespace) -> Results:
    from pocketqa.data.formats import load_examples

    setup(args)
    results = Results("serving", args)
    levels = [int(x) for x in split_list(args.levels)]
    counts = parse_counts(args.requests, levels)
    examples = load_examples(squad_file(args.data, "dev", "--data"))
    random.Random(args.seed).shuffle(examples)
    items = [{"question": ex.question, "context": ex.context} for ex in examples[: max(counts.values()) + args.warmup]]
    results.settings = {"levels": levels, "requests": counts, "level_seconds": args.level_seconds,
                        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "model": args.model}
    modes = {"no batching": 1, "batching": args.max_batch}
    sources = {mode: REPO / "src" for mode in modes}
    if args.before_src is not None:
        if not (args.before_src / "pocketqa").is_dir():
            raise SystemExit(f"--before-src {args.before_src}: no pocketqa package there; give a checkout's src/ folder")
        modes["batching (before)"] = args.max_batch
        sources["batching (before)"] = args.before_src
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill still stops the servers
    with tempfile.TemporaryDirectory(prefix="pocketqa-serve-bench-") as tmp, contextlib.ExitStack() as stack:
        model = model_dir(args.model, Path(tmp), seed=args.seed)
        # Both servers run at once (an idle one costs no CPU); before every run both must be
        # idle, since the last run's cut-off requests would steal CPU from the next.
        servers = {mode: stack.enter_context(Server(model, max_batch, args.max_wait_ms, args.threads, args.device,
                                                    Path(tmp) / f"server-{i}-{max_batch}.log", src=sources[mode]))
                   for i, (mode, max_batch) in enumerate(modes.items())}
        for server in servers.values():
            server.wait_ready()
            asyncio.run(run_level(server.url, items[-args.warmup:], 4, args.warmup, 60))

        def idle() -> None:
            for server in servers.values():
                server.wait_idle()

        by_level = {}
        for clients in levels:
            arms = [Arm(mode, lambda url=server.url, c=clients: asyncio.run(
                        run_level(url, items, c, counts[c], args.level_seconds)), before=idle)
                    for mode, server in servers.items()]
            say(f"{clients} client(s): {counts[clients]} requests per server and round")
            samples = take_turns(arms, args.rounds, f"{clients} clients", "req/s")
            by_level[clients] = results.compare(f"{clients} client(s)", samples, anchor="no batching", unit="req/s")
        results.settings["server_stats"] = {mode: server.stats() for mode, server in servers.items()}
        if args.before_src is not None:
            results.settings["before_src"] = str(args.before_src)
    for mode in modes:
        if 1 in by_level and len(levels) > 1:
            top = max(levels)
            gain = by_level[top]["arms"][mode]["median"] / by_level[1]["arms"][mode]["median"]
            results.notes.append(f"{mode}: throughput at {top} clients / 1 client = {gain:.2f}x")
        for clients in levels:
            last = by_level[clients]["arms"][mode]["extra"]
            results.notes.append(f"{mode} at {clients} client(s) (last round): 5xx {last['status_5xx']}, failed "
                                 f"{last['failed']}, cut off {last['cut_off']}, p50 {last['p50_ms']} ms, "
                                 f"p99 {last['p99_ms']} ms")
    for mode, stats in results.settings["server_stats"].items():
        results.notes.append(f"{mode}: {stats['questions']} questions in {stats['model_calls']} model calls "
                             f"(largest batch {stats['largest_batch']})")
    return results
