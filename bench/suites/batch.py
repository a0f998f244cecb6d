"""Batch: ``pocketqa predict --engine ray`` (Ray Data actors) vs one process, on the same questions.

The first ``--n`` SQuAD 2.0 dev questions go into ``--shards`` Parquet files; each arm answers
all of them and writes one output file per input file:

- ``one process`` (the anchor): ``QuestionAnswerer`` with ``--threads`` threads (default 2),
  rows read with pyarrow, ``decode_examples`` + ``records``, ``write_prediction_rows``;
- ``ray, N actors``: ``pocketqa.batch.engine.run_batch`` with N actors of one thread each,
  and one actor with ``--threads`` threads: the same cores as the anchor.

Every timed run includes loading the model (once per actor for Ray: each run starts its
actor pool) and reading and writing the files; the Ray session itself is started once,
untimed, as a cluster that is already up (``--address``); its start-up is reported apart.
The default model is the bundled int8 ONNX MiniLM-L6 (``--model`` for another).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import Arm, Results, add_common_arguments, load_examples, say, setup, squad_file, take_turns


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=2)
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file (questions come from it)")
    p.add_argument("--n", type=int, default=2000, help="questions: the first N of --data (default 2000)")
    p.add_argument("--shards", type=int, default=4, help="Parquet input files the questions are split into")
    p.add_argument("--model", default=None, help="model dir (default: the bundled int8 ONNX model)")
    p.add_argument("--actors", default="2,1", help="comma list of actor counts to time (default 2,1)")
    p.add_argument("--rows-per-batch", type=int, default=64, help="questions per actor call (default 64)")


def write_inputs(examples: list, root: Path, shards: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    per = -(-len(examples) // shards)
    for i in range(shards):
        part = examples[i * per : (i + 1) * per]
        rows = [{"id": ex.id, "question": ex.question, "context": ex.context} for ex in part]
        pq.write_table(pa.Table.from_pylist(rows), root / f"part-{i:03d}.parquet")
    return root


def one_process(model: str | None, threads: int, inputs: Path, out: Path) -> dict[str, str]:
    """The anchor: what a single-process script does with the same files."""
    import pyarrow.parquet as pq

    from pocketqa.data.predictions import write_prediction_rows
    from pocketqa.data.squad import Example
    from pocketqa.inference.answerer import QuestionAnswerer

    qa = QuestionAnswerer.from_pretrained(model, threads=threads)
    answers = {}
    for path in sorted(inputs.glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        examples = [Example(id=r["id"], title="", context=r["context"], question=r["question"]) for r in rows]
        records = qa.records(examples, qa.decode_examples(examples))
        write_prediction_rows(out / path.name, records, {"model": qa.name, "threshold": qa.threshold})
        answers.update({r["id"]: r["answer"] for r in records})
    return answers


def read_answers(out: Path) -> dict[str, str]:
    from pocketqa.data.predictions import read_prediction_rows

    return {r["id"]: r["answer"] for path in sorted(out.glob("*.parquet")) for r in read_prediction_rows(path)[0]}


def fixed_costs(examples: list, work: Path, args, actor_counts: list[int], threads: int) -> dict[str, float]:
    """Seconds of a run over 8 questions: what each run pays whatever the corpus size."""
    from pocketqa.batch.engine import run_batch

    inputs = write_inputs(examples[:8], work / "in-8", 1)
    seconds = {}
    t0 = time.perf_counter()
    one_process(args.model, threads, inputs, work)
    seconds["one process"] = time.perf_counter() - t0
    for actors in actor_counts:
        actor_threads = 1 if actors > 1 else threads
        t0 = time.perf_counter()
        run_batch(inputs, work / f"out-8-{actors}", model=args.model, answerer_kwargs={"threads": actor_threads},
                  actors=actors, cpus_per_actor=actor_threads, progress=False)
        seconds[f"ray, {actors} actor(s)"] = time.perf_counter() - t0
    say("fixed costs: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return seconds


def run(args: argparse.Namespace) -> Results:
    setup(args)
    import ray

    from pocketqa.batch.engine import run_batch

    threads = args.threads or 2
    actor_counts = [int(a) for a in args.actors.split(",") if a.strip()]
    examples = load_examples(squad_file(args.data, "dev", "--data"), args.n)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    inputs = write_inputs(examples, work / "in", args.shards)
    results = Results("batch", args)
    results.settings = {"n": len(examples), "shards": args.shards, "model": args.model or "bundled int8 ONNX",
                        "rows_per_batch": args.rows_per_batch, "anchor_threads": threads}

    t0 = time.perf_counter()
    # as `pocketqa predict --engine ray` starts it: the actors' CPUs and one for Ray Data's reader
    ray.init(num_cpus=max(max(actor_counts) + 1, threads + 1), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    say(f"Ray session started in {ray_start:.1f} s")
    answers: dict[str, dict[str, str]] = {}

    def anchor() -> None:
        out = work / "out-one"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        answers["one process"] = one_process(args.model, threads, inputs, out)

    def ray_arm(name: str, actors: int, actor_threads: int):
        def go() -> None:
            out = work / f"out-{name}"
            run_batch(inputs, out, model=args.model, answerer_kwargs={"threads": actor_threads}, actors=actors,
                      cpus_per_actor=actor_threads, rows_per_batch=args.rows_per_batch, overwrite=True,
                      progress=False)
            answers[name] = read_answers(out)
        return go

    arms = [Arm("one process", anchor, work=len(examples))]
    for actors in actor_counts:
        actor_threads = 1 if actors > 1 else threads
        name = f"ray, {actors} actor{'s' if actors > 1 else ''} x {actor_threads} thread{'s' if actor_threads > 1 else ''}"
        arms.append(Arm(name, ray_arm(name, actors, actor_threads), work=len(examples)))
    try:
        samples = take_turns(arms, args.rounds, label="batch", unit="questions/s")
        fixed = fixed_costs(examples, work, args, actor_counts, threads)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    ref = answers["one process"]
    same = {name: sum(got.get(k) == v for k, v in ref.items()) / len(ref) for name, got in answers.items()}
    results.compare(f"{len(examples)} dev questions, {args.shards} Parquet shards", samples, "one process",
                    "q/s", identical_answers=same)
    results.notes.append(f"Ray session start-up (untimed above, paid once per local run): {ray_start:.1f} s")
    results.notes.append("each timed run includes loading the model (per actor for Ray), reading and writing the files")
    for name, seconds in fixed.items():
        results.notes.append(f"fixed cost of a run ({name}: 8 questions, start-up and model loads included): {seconds:.1f} s")
    results.settings["fixed_seconds"] = fixed
    return results
