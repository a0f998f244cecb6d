"""The benchmark harness: arms timed in turns, a machine header, JSON + markdown results, test models.

Every suite compares pocketqa with an anchor (transformers' pipeline, its Trainer, the
teacher run every step, a server without batching, one masked word per forward pass) on
the same machine, in the same run. Arms take turns, round after round (A B C, B C A,
C A B, ...), so that a change in machine load hits all of them alike; what a shared or
noisy machine can still trust is the ratio of each arm to the anchor, not the absolute
numbers. Each arm reports the best and the median rate over its rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where the SQuAD 2.0 files are looked for when --data / --train are not given.
SQUAD_DIR = REPO.parent / "shared" / "data" / "squad2"


# -- timing --------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of an arm.

    Attributes:
        seconds: Time of the measured part (wall clock).
        work: Units done in that time (questions, windows, requests); None: the arm's ``work``.
        cpu_seconds: CPU time of this process in that time, when the work ran in it.
        extra: Anything else the arm wants kept (answers, latencies, error counts).
    """

    seconds: float
    work: float | None = None
    cpu_seconds: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Arm:
    """One side of a comparison.

    Attributes:
        name: Shown in the tables ("pocketqa", "pipeline", ...).
        run: One timed run. Returns None to be timed as a whole by the harness, the seconds
            of its measured part, or a full ``Sample``.
        work: Units one run does, for the rate (questions per run, windows per run, ...).
        before: Untimed, before every run (warm-up, emptying a queue).
        sync: Called at both ends of a run the harness times (``torch.cuda.synchronize``).
    """

    name: str
    run: Callable[[], Sample | float | None]
    work: float = 1.0
    before: Callable[[], None] | None = None
    sync: Callable[[], None] | None = None


def timed(arm: Arm) -> Sample:
    """Runs ``arm`` once and returns what it measured (its ``before`` runs untimed first)."""
    if arm.before is not None:
        arm.before()
    if arm.sync is not None:
        arm.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = arm.run()
    if arm.sync is not None:
        arm.sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if out is None:
        return Sample(seconds=wall, work=arm.work, cpu_seconds=cpu)
    if isinstance(out, Sample):
        if out.work is None:
            out.work = arm.work
        return out
    return Sample(seconds=float(out), work=arm.work)


def take_turns(arms: list[Arm], rounds: int, label: str = "", unit: str = "/s") -> dict[str, list[Sample]]:
    """Times every arm once per round, each round starting one arm later than the last.

    Returns:
        Arm name -> its samples, one per round, in round order.
    """
    samples: dict[str, list[Sample]] = {arm.name: [] for arm in arms}
    for r in range(rounds):
        shift = r % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            samples[arm.name].append(timed(arm))
        rates = ", ".join(f"{name} {rate(s[-1]):.3g}" for name, s in samples.items())
        say(f"{label} round {r + 1}/{rounds}: {rates} {unit}")
    return samples


def rate(sample: Sample) -> float:
    return sample.work / sample.seconds if sample.seconds > 0 else float("nan")


def summarize(samples: dict[str, list[Sample]], anchor: str) -> dict[str, dict]:
    """Best and median rate per arm, and each arm's ratio to the anchor (> 1: faster than it)."""
    stats = {}
    for name, runs in samples.items():
        rates = [rate(s) for s in runs]
        cpu = [s.work / s.cpu_seconds for s in runs if s.cpu_seconds]
        stats[name] = {
            "best": max(rates),
            "median": statistics.median(rates),
            "rates": rates,
            "seconds": [s.seconds for s in runs],
            "work": [s.work for s in runs],
            "cpu_rate_median": statistics.median(cpu) if len(cpu) == len(runs) else None,
        }
    base = stats[anchor]
    for s in stats.values():
        s["ratio_median"] = s["median"] / base["median"]
        s["ratio_best"] = s["best"] / base["best"]
        both = s["cpu_rate_median"] is not None and base["cpu_rate_median"] is not None
        s["cpu_ratio"] = s["cpu_rate_median"] / base["cpu_rate_median"] if both else None
    return stats


T0 = time.perf_counter()


def say(message: str) -> None:
    """Progress on stderr (stdout carries the markdown table)."""
    print(f"[{time.perf_counter() - T0:7.1f} s] {message}", file=sys.stderr, flush=True)


# -- results -------------------------------------------------------------------------


def machine(device: str = "cpu") -> dict:
    """What the numbers were measured on: CPU model, cores, load, library versions, device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for package in ("pocketqa", "torch", "transformers", "tokenizers", "onnxruntime", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **versions,
        "device": device,
    }
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


class Results:
    """What one suite run measured: comparisons, settings, notes and the machine header."""

    def __init__(self, suite: str, args: argparse.Namespace):
        self.suite = suite
        self.command = "python -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else f"python -m bench {suite}"
        self.rounds = args.rounds
        self.machine = machine(args.device)
        self.machine["threads"] = args.threads
        self.settings: dict = {}
        self.comparisons: list[dict] = []
        # A suite whose rows are not timed arms (calibration: F1 per method) fills this instead:
        # {"header": [column names], "rows": [[cell text, ...], ...]}.
        self.table: dict | None = None
        self.notes: list[str] = []

    def compare(self, name: str, samples: dict[str, list[Sample]], anchor: str, unit: str, **info) -> dict:
        """Adds one comparison (e.g. "minilm-l6, batch 1") and returns its summary."""
        arms = summarize(samples, anchor)
        for arm, runs in samples.items():
            extra = {k: v for s in runs for k, v in s.extra.items()}  # the last round's values win
            if extra:
                arms[arm]["extra"] = extra
        row = {"name": name, "anchor": anchor, "unit": unit, "arms": arms, **info}
        self.comparisons.append(row)
        return row

    def to_dict(self) -> dict:
        return {
            "suite": self.suite,
            "command": self.command,
            "rounds": self.rounds,
            "machine": self.machine,
            "settings": self.settings,
            "comparisons": self.comparisons,
            **({"table": self.table} if self.table is not None else {}),
            "notes": self.notes,
        }

    def write(self, out: Path | None) -> None:
        """Prints the markdown table; with ``out``, writes OUT (JSON) and OUT with .md beside it."""
        text = markdown(self.to_dict())
        print(text)
        if out is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(self.to_dict(), indent=1, ensure_ascii=False, default=str) + "\n")
        write_atomic(out.with_suffix(".md"), text + "\n")
        say(f"wrote {out} and {out.with_suffix('.md')}")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def machine_line(m: dict) -> str:
    """One line naming the machine, for table captions."""
    cores = f"{m['usable_cores']} of {m['cores']} cores" if m.get("usable_cores") != m.get("cores") else f"{m['cores']} cores"
    device = m.get("gpu") or m.get("device", "cpu")
    load = f", load {m['load_average'][0]}" if m.get("load_average") else ""
    libs = ", ".join(f"{k} {m[k]}" for k in ("torch", "transformers", "onnxruntime") if m.get(k))
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return f"{m['cpu']} ({cores}{threads}{load}), device {device}; {libs}"


def fmt(x: float | None) -> str:
    if x is None:
        return ""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def markdown(result: dict) -> str:
    """The comparisons of one result as a markdown table, with its command and machine."""
    if result.get("table"):  # rows that are not timed arms (calibration): no rounds, no rates
        table = result["table"]
        lines = [f"`{result['command']}`  ", machine_line(result["machine"]), "",
                 "| " + " | ".join(table["header"]) + " |", "|" + "---|" * len(table["header"]),
                 *("| " + " | ".join(row) + " |" for row in table["rows"])]
        if result.get("notes"):
            lines += ["", *(f"- {note}" for note in result["notes"])]
        return "\n".join(lines)
    lines = [
        f"`{result['command']}`  ",
        f"{machine_line(result['machine'])}; {result['rounds']} round(s) taking turns",
        "",
    ]
    answers = any("identical_answers" in c for c in result["comparisons"])
    header = "| comparison | arm | best | median | vs anchor (median) | vs anchor (best) |"
    lines += [header + (" same answers as anchor |" if answers else ""),
              "|---|---|---:|---:|---:|---:|" + ("---:|" if answers else "")]
    for c in result["comparisons"]:
        same = c.get("identical_answers", {})
        for name, s in c["arms"].items():
            anchor = " (anchor)" if name == c["anchor"] else ""
            row = (f"| {c['name']} | {name}{anchor} | {fmt(s['best'])} {c['unit']} | {fmt(s['median'])} {c['unit']} "
                   f"| {s['ratio_median']:.2f}x | {s['ratio_best']:.2f}x |")
            if answers:
                row += f" {100 * same[name]:.1f} % |" if name in same else " |"
            lines.append(row)
    if result.get("notes"):
        lines.append("")
        lines.extend(f"- {note}" for note in result["notes"])
    return "\n".join(lines)


# -- options -------------------------------------------------------------------------


def add_common_arguments(p: argparse.ArgumentParser, rounds: int = 3) -> None:
    """The flags every suite takes: rounds, device, threads, seed, output."""
    p.add_argument("--rounds", type=int, default=rounds, help=f"timed runs per arm, taken in turns (default {rounds})")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every arm (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="weight-init and sampling seed")
    p.add_argument("--out", type=Path, default=None, help="write the results here as JSON (and a .md beside it)")


def setup(args: argparse.Namespace) -> None:
    """Applies the common flags (threads; a CUDA device must exist)."""
    import torch

    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per model save and load would bury the progress lines
    hf_logging.set_verbosity_error()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here; use --device cpu")


def cuda_sync(device: str) -> Callable[[], None] | None:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def squad_file(path: Path | None, split: str, flag: str) -> Path:
    """``path``, or the SQuAD 2.0 ``split`` file in SQUAD_DIR; exits naming ``flag`` when missing."""
    path = path or SQUAD_DIR / f"{split}-v2.0.json.gz"
    if not path.is_file():
        raise SystemExit(f"{path}: SQuAD 2.0 {split} file not found; pass {flag} {split}-v2.0.json[.gz]")
    return path


def load_examples(path: Path, n: int, sample_seed: int | None = None) -> list:
    """The first ``n`` questions of a SQuAD file, or a seeded random sample of ``n``."""
    import random

    from pocketqa.data.formats import load_examples

    examples = load_examples(path)
    if sample_seed is not None:
        return random.Random(sample_seed).sample(examples, min(n, len(examples)))
    return examples[:n]


# -- test models ---------------------------------------------------------------------

# Shapes of real models, built with random weights: speed does not depend on the weights.
SHAPES = {
    # all-MiniLM-L6-v2, the bundled model's architecture
    "minilm-l6": ("BertConfig", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536)),
    # bert-base-uncased's width, 6 layers (TinyBERT 6L-768's shape)
    "bert-6l-768": ("BertConfig", dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                                       intermediate_size=3072)),
    # google/mobilebert-uncased
    "mobilebert": ("MobileBertConfig", dict(hidden_size=512, embedding_size=128, true_hidden_size=128,
                                            intra_bottleneck_size=128, num_hidden_layers=24, num_attention_heads=4,
                                            intermediate_size=512, num_feedforward_networks=4)),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
REAL_MINILM = "pip:all-MiniLM-L6-v2"


def tokenizer_dir() -> Path:
    """bert-base-uncased's vocabulary: all-MiniLM-L6-v2's files when installed, else the bundled model's."""
    from pocketqa.errors import PocketQAError
    from pocketqa.models import default_model_path, resolve_model

    try:
        return Path(resolve_model(REAL_MINILM))
    except PocketQAError:
        return default_model_path()


def build_model(shape: str, root: Path, seed: int = 0, layers: int | None = None) -> Path:
    """Saves a QA model of ``SHAPES[shape]`` with seeded random weights and a real tokenizer.

    The tokenizer files are copied, not re-saved, so that older transformers releases (the
    pipeline's anchor environment) read them too.

    Args:
        shape: A key of ``SHAPES``.
        root: The model goes to ``root / shape`` (``root / shape-<layers>L`` with ``layers``).
        seed: Weight-init seed.
        layers: Fewer layers than the real model, for quick runs.
    """
    import torch
    import transformers

    config_class, dims = SHAPES[shape]
    if layers:
        dims = {**dims, "num_hidden_layers": layers}
    out = root / (f"{shape}-{layers}L" if layers else shape)
    out.mkdir(parents=True, exist_ok=True)
    source = tokenizer_dir()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    vocab_size = len(transformers.AutoTokenizer.from_pretrained(str(out)))
    config = getattr(transformers, config_class)(vocab_size=vocab_size, max_position_embeddings=512, **dims)
    torch.manual_seed(seed)
    model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def model_dir(name: str, root: Path, seed: int = 0, layers: int | None = None) -> str:
    """A random-weight model of a ``SHAPES`` name, or a real model (a dir, hub id, ``pip:NAME``)."""
    if name in SHAPES:
        return str(build_model(name, root, seed=seed, layers=layers))
    from pocketqa.errors import PocketQAError
    from pocketqa.models import resolve_model

    try:
        return resolve_model(name)
    except PocketQAError as e:
        raise SystemExit(f"--models {name}: {e} (random-weight shapes: {', '.join(SHAPES)})") from None


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
