"""The driver of a batch run: plan the shards, start or join Ray, stream, write each shard.

One Ray Data pipeline per input format (Ray Data's ``union`` would not keep the file order)
runs over every pending file of that format, with
each row's file in a ``path`` column (``include_paths``) and the execution's
``preserve_order`` on, so answers come back in input order: file by file. The driver keeps
the answers of the file now arriving (no contexts: about 100 bytes a row), writes that
file's output atomically when the next file's first answer arrives (or the stream ends),
and frees them. So memory is bounded by one shard's answers and Ray's own in-flight
blocks, the actors load the model once for the whole run (not once per file), and a run
killed midway leaves only complete output files: a rerun skips them and redoes the rest
from their first row, so every id ends up exactly once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pocketqa.batch.actor import PATH_COLUMN, SKIPPED_COLUMN, AnswerActor, output_schema
from pocketqa.batch.shards import REQUIRED_COLUMNS, Shard, pending, plan_shards
from pocketqa.data.features import WindowConfig
from pocketqa.data.predictions import write_prediction_rows
from pocketqa.errors import PocketQAError, missing_extra
from pocketqa.inference.decode import check_align_to_words, check_scoring
from pocketqa.modeldir import meta_threshold, meta_window, read_meta
from pocketqa.models import resolve_model

# Ray Data's read stages (file listing, reading) need a CPU of their own: actors holding
# every CPU of the cluster leave them none and the run hangs. One is kept free for them.
READER_CPUS = 1


def import_ray():
    """Ray, or the ImportError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
        import ray.exceptions  # noqa: F401
    except ImportError:
        raise missing_extra("ray[data]", "ray") from None
    return ray


@contextmanager
def ray_session(address: str | None, cpus_needed: float) -> Iterator[object]:
    """Ray for the run: the session this process already has, the cluster at ``address``, or a
    local Ray started here; what was started or joined here is shut down (left) at the end.

    Args:
        address: ``ray start``'s head address ("auto", "HOST:6379"), or None.
        cpus_needed: CPUs the actors claim plus the reader's; a local Ray gets at least this
            many logical CPUs, and a cluster with fewer is refused before any actor starts.
    """
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        if address is None:
            ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)), include_dashboard=False,
                     log_to_driver=True)
        else:
            try:
                ray.init(address=address, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise PocketQAError(f"--address {address}: cannot join the Ray cluster ({e}); "
                                    "start one with `ray start --head`") from None
    try:
        have = ray.cluster_resources().get("CPU", 0)
        if have < cpus_needed:
            raise PocketQAError(f"the Ray cluster has {have:g} CPUs but the actors and the reader need {cpus_needed:g}; "
                                "pass fewer --actors or --threads, or add nodes")
        yield ray
    finally:
        if owned:
            ray.shutdown()


@contextmanager
def ordered_reads(ray) -> Iterator[None]:
    """Ray Data settings of the run, put back afterwards (a caller's own session keeps its own)."""
    context = ray.data.DataContext.get_current()
    before = (context.execution_options.preserve_order, getattr(context, "use_datasource_v2", None))
    context.execution_options.preserve_order = True  # answers arrive file by file (see the module doc)
    # Ray 2.60's new Parquet reader lists several files on threads that race on importing
    # fsspec's optional HTTP filesystem (without aiohttp installed a read fails at random);
    # the classic reader does not (older Rays have only the classic one)
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.execution_options.preserve_order = before[0]
        if before[1] is not None:
            context.use_datasource_v2 = before[1]


def read_rows(ray, shards: list[Shard]):
    """One Ray Data dataset over the files of ``shards`` (all of one format), in their order."""
    paths = [str(s.source) for s in shards]
    fmt = shards[0].fmt
    if fmt == "parquet":
        ds = ray.data.read_parquet(paths, include_paths=True)
    elif fmt == "json":
        ds = ray.data.read_json(paths, include_paths=True)  # Arrow's reader: JSON Lines, Arrow blocks
    else:
        import pyarrow as pa
        from pyarrow import csv

        # ids such as 00123 stay text: Arrow would read an all-digit column as integers
        types = {c: pa.string() for c in REQUIRED_COLUMNS}
        ds = ray.data.read_csv(paths, include_paths=True, convert_options=csv.ConvertOptions(column_types=types))
    return ds.select_columns([*REQUIRED_COLUMNS, PATH_COLUMN])  # other columns never reach the actors


def run_batch(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    threshold: float | None = None,
    answerer_kwargs: dict | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    rows_per_batch: int = 64,
    out_format: str = "parquet",
    overwrite: bool = False,
    address: str | None = None,
    progress: bool = True,
) -> dict:
    """Answers every row of the input files and writes one output file per input file.

    Args:
        data: A row file (.parquet, .jsonl, .csv), a directory of them or a glob.
        out_dir: Where the output files go (created), mirroring the inputs' paths.
        model: Model directory, hub id, ``pip:NAME`` or None (the bundled model).
        threshold: The no-answer threshold (None: the model's calibrated one).
        answerer_kwargs: More ``QuestionAnswerer.from_pretrained`` keywords (threads,
            batch_size, scoring, window settings, ...); ``device`` is set from ``gpus_per_actor``.
        actors: Actors, each holding one model.
        cpus_per_actor: CPUs each actor claims from Ray.
        gpus_per_actor: GPUs each actor claims (> 0: the model runs on CUDA with PyTorch).
        rows_per_batch: Questions per ``map_batches`` call; all windows of a question stay in one.
        out_format: "parquet" or "jsonl".
        overwrite: Redo shards whose output exists (else they are skipped).
        address: Join the Ray cluster there instead of starting a local Ray.
        progress: Show a bar over the shards (Ray Data shows its own over the rows).

    Returns:
        ``{"shards", "skipped_shards", "written", "rows", "empty_rows"}``: counts of the run.
    """
    if out_format not in ("parquet", "jsonl"):
        raise PocketQAError(f"--out-format must be parquet or jsonl, found {out_format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PocketQAError(f"--out {out_dir}: is a file, expected a directory")
    shards = plan_shards(data, out_dir, out_format)  # every file checked before Ray starts
    todo = pending(shards, overwrite)
    summary = {"shards": len(shards), "skipped_shards": len(shards) - len(todo), "written": 0, "rows": 0,
               "empty_rows": 0}
    if not todo:
        return summary
    kwargs = dict(answerer_kwargs or {})
    # resolved here, once: every actor then uses the same threshold, and the files record it
    name, threshold = model_facts(model, threshold, kwargs)
    if gpus_per_actor > 0:
        kwargs.setdefault("device", "cuda")
    else:
        kwargs["device"] = "cpu"
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="shards", unit="file", disable=not progress)
    with ExitStack() as stack:
        ray = stack.enter_context(ray_session(address, actors * cpus_per_actor + READER_CPUS))
        stack.enter_context(bar)
        stack.enter_context(ordered_reads(ray))
        # one pipeline per format: Ray Data's union does not keep the order the shards are written in
        for fmt in sorted({s.fmt for s in todo}):
            group = [s for s in todo if s.fmt == fmt]
            # a single file may come as one block, and a block goes to one actor: smaller blocks spread it
            ds = read_rows(ray, group).repartition(target_num_rows_per_block=rows_per_batch * 4)
            ds = ds.map_batches(
                AnswerActor, fn_constructor_args=(model, threshold, kwargs), batch_size=rows_per_batch,
                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
            )
            written = set()
            try:
                for shard, table in stream_shards(ds, group):
                    summary["rows"] += write_shard(shard, table, name, threshold)
                    written.add(shard)
                    summary["empty_rows"] += sum(table.column(SKIPPED_COLUMN).to_pylist())
                    summary["written"] += 1
                    bar.update(1)
            except ray.exceptions.RayError as e:  # a worker's traceback: its last line says what failed
                last = next((line for line in reversed(str(e).splitlines()) if line.strip()), type(e).__name__)
                left = [str(s.source) for s in group if s not in written]
                raise PocketQAError(f"the Ray job failed ({last.strip()}) while reading or answering "
                                    f"{', '.join(left[:3])}{' ...' if len(left) > 3 else ''}; the files written so far "
                                    "are complete: fix the input and rerun the command to finish the rest") from None
    return summary


def stream_shards(ds, shards: list[Shard]):
    """Yields (shard, its answers as one Arrow table) as each shard's answers complete.

    Answers arrive in input order (``preserve_order``), so a shard is complete when the
    next one's first answer arrives; answers of a file already finished, or of a file that
    is not an input, raise instead of being written.
    """
    import pyarrow as pa

    by_path = {str(s.source): s for s in shards}
    done: set[str] = set()
    current, parts = None, []
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        paths = block.column(PATH_COLUMN).to_pylist()
        start = 0
        while start < len(paths):  # runs of equal paths within the block
            path = paths[start]
            end = start + 1
            while end < len(paths) and paths[end] == path:
                end += 1
            if path != current:
                if path not in by_path:
                    raise PocketQAError(f"Ray Data returned answers for {path}, which is not an input of this run")
                if path in done:
                    raise PocketQAError(f"{path}: its answers came back out of order; its output was not written")
                if current is not None:
                    yield by_path[current], pa.concat_tables(parts)
                    done.add(current)
                current, parts = path, []
            parts.append(block.slice(start, end - start))
            start = end
    if current is not None:
        yield by_path[current], pa.concat_tables(parts)
        done.add(current)
    for shard in shards:  # files without rows
        if str(shard.source) not in done:
            yield shard, output_schema().empty_table()


def model_facts(model: str | None, threshold: float | None, answerer_kwargs: dict) -> tuple[str, float]:
    """The model's name and the threshold its answers use, from its pocketqa.json (no model load).

    Also checks the window and scoring settings here, so that a bad one is one error on the
    driver rather than every actor dying in its constructor.
    """
    path = resolve_model(model)
    meta = read_meta(path) if Path(path).is_dir() else {}
    window = {k: answerer_kwargs[k] for k in ("max_seq_length", "doc_stride", "max_query_length") if k in answerer_kwargs}
    WindowConfig(**{**meta_window(path, meta), **window})
    scoring = check_scoring(answerer_kwargs.get("scoring", "logits"))
    check_align_to_words(scoring, answerer_kwargs.get("align_to_words", False))
    name = meta.get("name", Path(path).name if Path(path).is_dir() else path)
    return name, (meta_threshold(path, meta, scoring) if threshold is None else float(threshold))


def write_shard(shard: Shard, table, model_name: str, threshold: float) -> int:
    """Writes one shard's answers atomically (after checking the count the footer promised)."""
    if shard.rows is not None and table.num_rows != shard.rows:
        raise PocketQAError(f"{shard.source}: {shard.rows} rows in the file but {table.num_rows} answers came back; "
                            f"{shard.out} was not written")
    shard.out.parent.mkdir(parents=True, exist_ok=True)
    rows = table.drop_columns([PATH_COLUMN, SKIPPED_COLUMN]).to_pylist()
    metadata = {"model": model_name, "threshold": threshold, "source": str(shard.source), "rows": len(rows)}
    return write_prediction_rows(shard.out, rows, metadata)
