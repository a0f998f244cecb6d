"""Settings of the training recipes: ``TrainConfig`` (fine-tuning) and ``DistillConfig``.

Recipe YAML keys are the field names; bad values are reported all at once.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path
from typing import get_type_hints

from pocketqa.data.features import WindowConfig
from pocketqa.errors import ConfigError
from pocketqa.training.layer_map import parse_layer_map

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DISTILL_PRECISIONS = ("auto", "bf16", "fp32")
STAGES = ("1", "2", "both")
ATTENTION_TARGETS = ("scores", "probs")
BRIDGES = ("auto", "off")


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run; recipe YAML keys are these field names.

    Defaults follow transformers' run_squad.py (warmup 0, weight decay 0, clip 1.0,
    Adam eps 1e-8, seed 42, max_query_length 64) and card 1 (lr 3e-5, batch 16, 384/128).

    Attributes:
        model: Base model: HF dir, hub id or ``pip:NAME`` (a QA head is added if missing).
        train: SQuAD 1.1/2.0 training file (.json or .json.gz).
        dev: Optional dev file, evaluated at the end (and every ``eval_steps``).
        out: Output directory (HF checkpoint + tokenizer + pocketqa.json + log.jsonl).
        name: Display name stored in pocketqa.json (default: the out dir's name).
        learning_rate: Peak AdamW learning rate.
        epochs: Passes over the training windows (ignored when max_steps is set).
        max_steps: Total optimizer steps; overrides epochs.
        batch_size: Global batch: windows per optimizer step over all processes.
        grad_accum: Micro-batches per step and process (memory knob, same math).
        warmup: Linear warmup: a fraction of all steps if < 1, else a number of steps.
        max_grad_norm: Gradient clipping norm (0 = off).
        save_steps: Checkpoint every N steps (0 = never).
        keep_checkpoints: Keep only the newest N checkpoints (0 or None = keep all).
        eval_steps: Evaluate on dev every N steps (the end is always evaluated).
        log_steps: Log loss/lr/throughput every N steps.
        precision: "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp16" or "fp32".
        device: "cpu", "cuda", "cuda:1"... (default: cuda when available).
        cache_dir: Feature cache (default: $POCKETQA_CACHE or ~/.cache/pocketqa).
        resume: "latest" or a checkpoint dir: continue a killed run.
        overwrite: Replace the results of an earlier run in ``out``.
        compile: Run the model through torch.compile.
    """

    model: str | None = None
    train: str | None = None
    dev: str | None = None
    out: str | None = None
    name: str | None = None
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    learning_rate: float = 3e-5
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    warmup: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_epsilon: float = 1e-8
    seed: int = 42
    save_steps: int = 1000
    keep_checkpoints: int | None = 2
    eval_steps: int | None = None
    eval_batch_size: int = 64
    log_steps: int = 50
    precision: str = "auto"
    device: str | None = None
    cache_dir: str | None = None
    resume: str | None = None
    overwrite: bool = False
    compile: bool = False
    unknown_keys: InitVar[Sequence[str]] = ()
    source: InitVar[str] = "training config"

    def __post_init__(self, unknown_keys: Sequence[str], source: str) -> None:
        names = [f.name for f in fields(self)]
        problems = []
        for key in unknown_keys:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if unknown_keys:
            problems.append(f"(known keys: {', '.join(names)})")
        badly_typed = self._coerce_types(problems)
        problems += self._check_values(skip=badly_typed)
        if problems:
            count = sum(not p.startswith("(known keys") for p in problems)
            raise ConfigError(f"{source}: {count} problem(s): " + "; ".join(problems))

    def _coerce_types(self, problems: list[str]) -> set[str]:
        """Converts YAML/CLI values to the field types (YAML reads ``3e-5`` as a string).

        Appends a message per bad value to ``problems`` and returns the bad fields' names.
        """
        bad = set()
        names = {f.name for f in fields(self)}
        for name, hint in get_type_hints(type(self)).items():
            if name not in names:
                continue
            value = getattr(self, name)
            kind = next(k for k in (bool, int, float, str) if k.__name__ in str(hint))
            if value is None:
                if "None" not in str(hint):
                    problems.append(f"{name} must not be empty")
                    bad.add(name)
                continue
            converted = _convert(value, kind)
            if converted is None:
                problems.append(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, found {value!r}")
                bad.add(name)
            elif kind is float and not math.isfinite(converted):  # inf/nan pass every > 0 check
                problems.append(f"{name} must be a finite number, found {value!r}")
                bad.add(name)
            else:
                setattr(self, name, converted)
        return bad

    def _check_values(self, skip: set[str]) -> list[str]:
        """Range and consistency checks; fields in ``skip`` (already reported) are not checked."""
        c = self
        checks = [
            (("model",), lambda: bool(c.model), "missing 'model' (give --model or a 'model:' line in the recipe)"),
            (("train",), lambda: bool(c.train), "missing 'train' (give --train or a 'train:' line in the recipe)"),
            (("out",), lambda: bool(c.out), "missing 'out' (give --out or an 'out:' line in the recipe)"),
            (("learning_rate",), lambda: c.learning_rate > 0, f"learning_rate must be > 0, found {c.learning_rate}"),
            (("epochs",), lambda: c.epochs >= 1, f"epochs must be >= 1, found {c.epochs}"),
            (("max_steps",), lambda: c.max_steps is None or c.max_steps >= 1, f"max_steps must be >= 1, found {c.max_steps}"),
            (("batch_size",), lambda: c.batch_size >= 1, f"batch_size must be >= 1, found {c.batch_size}"),
            (("grad_accum",), lambda: c.grad_accum >= 1, f"grad_accum must be >= 1, found {c.grad_accum}"),
            (
                ("batch_size", "grad_accum"),
                lambda: c.batch_size < 1 or c.grad_accum < 1 or c.batch_size % c.grad_accum == 0,
                f"batch_size ({c.batch_size}) must be divisible by grad_accum ({c.grad_accum}): "
                "batch_size is the global batch that grad_accum splits",
            ),
            (("warmup",), lambda: c.warmup >= 0, f"warmup must be >= 0 (a fraction < 1 or a number of steps), found {c.warmup}"),
            (("warmup",), lambda: c.warmup < 1 or float(c.warmup).is_integer(), f"warmup >= 1 counts steps and must be whole, found {c.warmup}"),
            (("weight_decay",), lambda: c.weight_decay >= 0, f"weight_decay must be >= 0, found {c.weight_decay}"),
            (("max_grad_norm",), lambda: c.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0 = no clipping), found {c.max_grad_norm}"),
            (("adam_epsilon",), lambda: c.adam_epsilon > 0, f"adam_epsilon must be > 0, found {c.adam_epsilon}"),
            (("save_steps",), lambda: c.save_steps >= 0, f"save_steps must be >= 0 (0 = never), found {c.save_steps}"),
            (
                ("keep_checkpoints",),
                lambda: c.keep_checkpoints is None or c.keep_checkpoints >= 0,
                f"keep_checkpoints must be >= 0 (0 keeps all), found {c.keep_checkpoints}",
            ),
            (("eval_steps",), lambda: c.eval_steps is None or c.eval_steps >= 1, f"eval_steps must be >= 1, found {c.eval_steps}"),
            (("eval_steps", "dev"), lambda: c.eval_steps is None or bool(c.dev), "eval_steps needs a dev file (--dev)"),
            (("eval_batch_size",), lambda: c.eval_batch_size >= 1, f"eval_batch_size must be >= 1, found {c.eval_batch_size}"),
            (("log_steps",), lambda: c.log_steps >= 1, f"log_steps must be >= 1, found {c.log_steps}"),
            (("precision",), lambda: c.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, found {c.precision!r}"),
            (("resume", "overwrite"), lambda: not (c.resume and c.overwrite), "resume and overwrite exclude each other: pick one"),
        ]
        problems = [message for names, ok, message in checks if not skip.intersection(names) and not ok()]
        if not skip.intersection(("max_seq_length", "doc_stride", "max_query_length")):
            try:
                self.window
            except ConfigError as e:
                problems.append(str(e))
        return problems

    @property
    def window(self) -> WindowConfig:
        return WindowConfig(self.max_seq_length, self.doc_stride, self.max_query_length)

    @classmethod
    def from_dict(cls, values: dict, source: str = "training config") -> TrainConfig:
        """Builds a config from a dict (e.g. a recipe); unknown keys are reported, not dropped."""
        known = {f.name for f in fields(cls)}
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = [k for k in values if k not in known]
        return cls(**{k: v for k, v in values.items() if k in known}, unknown_keys=unknown, source=source)

    @classmethod
    def from_recipe(cls, path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
        """Reads a recipe YAML; non-None ``overrides`` (CLI flags) replace its values."""
        values = load_recipe(path)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        return asdict(self)


def _convert(value, kind: type):
    """``value`` as ``kind``, or None when it cannot be read as one (bools are never numbers)."""
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind is str:
        return str(value) if isinstance(value, (str, os.PathLike)) else None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def load_recipe(path: str | os.PathLike) -> dict:
    """Reads a recipe YAML file into a dict (keys as written)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a recipe is a YAML file") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, found {type(values).__name__}")
    return values


@dataclass
class DistillConfig:
    """Everything ``pocketqa distill`` needs; recipe keys are these field names.

    Defaults are card 2's (Haystack TinyBERT, see recipes/tinybert-6l-768d-squad2.yaml).
    """

    teacher: str | None = None
    out: str | None = None
    train: list[str] = field(default_factory=list)
    stage1_train: list[str] = field(default_factory=list)  # default: ``train``
    dev: str | None = None
    stage: str = "both"
    # student: a checkpoint, or layers picked from student_base, or a fresh small config
    student: str | None = None
    student_base: str | None = None  # default: the teacher
    student_layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None
    # windows
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    # optimisation (AdamW, linear warmup then linear decay, per stage)
    batch_size: int = 26
    stage1_epochs: int = 5
    stage1_learning_rate: float = 5e-5
    stage2_epochs: int = 5
    stage2_learning_rate: float = 3e-5
    max_steps: int | None = None  # steps of each stage; overrides its epochs
    warmup: float = 0.2  # < 1: a fraction of the steps; >= 1: a number of steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    embeds_dropout: float = 0.1  # dropout on the encoder output before the QA head (stage 2)
    # losses
    temperature: float = 1.0
    kd_weight: float = 1.0  # w: w * KD + (1 - w) * span loss
    attention_loss: bool = True
    attention_target: str = "scores"
    layer_map: str | None = None  # "0:0,1:2,2:4,3:6"; default: uniform
    # teacher and student vocabularies differ: "auto" maps ids through a VocabBridge when
    # both tokenizers segment text alike; "off" refuses such a pair
    bridge: str = "auto"
    # runtime
    teacher_batch_size: int = 64
    cache_dir: str | None = None
    precision: str = "auto"
    device: str | None = None
    seed: int = 42
    log_steps: int = 10
    overwrite: bool = False
    resume: str | None = None  # "latest" or a checkpoint dir: continue the stage that was running
    save_steps: int = 1000  # checkpoint every N steps of a stage (0 = never)
    keep_checkpoints: int | None = 2  # newest checkpoints kept per stage (None = all)

    def __post_init__(self) -> None:
        problems, bad = self._check_paths()
        self.stage = str(self.stage)
        if isinstance(self.bridge, bool):  # YAML 1.1 reads a bare `off` as False
            self.bridge = "auto" if self.bridge else "off"
        problems += self._coerce_numbers()
        if not self.teacher and "teacher" not in bad:
            problems.append("teacher is required (--teacher DIR or hub id)")
        if not self.out and "out" not in bad:
            problems.append("out is required (--out DIR)")
        if not self.train and "train" not in bad:
            problems.append("train is required (--train FILE [FILE ...])")
        if self.stage not in STAGES:
            problems.append(f"stage must be one of {', '.join(STAGES)}, found {self.stage!r}")
        fresh = [n for n in ("hidden", "heads", "intermediate") if getattr(self, n) is not None]
        if self.student and (fresh or self.student_layers is not None):
            problems.append(
                f"student {self.student!r} is a checkpoint; drop {', '.join(fresh + ['student_layers'])} "
                "or drop student to build one"
            )
        if self.hidden is not None and self.heads is not None and self.heads > 0 and self.hidden % self.heads:
            problems.append(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        for name in ("batch_size", "teacher_batch_size", "log_steps", "student_layers", "hidden", "heads", "intermediate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer, found {value!r}")
        for name in ("stage1_epochs", "stage2_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} must be an integer >= 0, found {getattr(self, name)!r}")
        for name in ("stage1_learning_rate", "stage2_learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, found {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, found {self.max_steps}")
        if not isinstance(self.save_steps, int) or self.save_steps < 0:
            problems.append(f"save_steps must be an integer >= 0 (0 = never), found {self.save_steps!r}")
        if self.keep_checkpoints is not None and (not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1):
            problems.append(f"keep_checkpoints must be a positive integer, found {self.keep_checkpoints!r}")
        if self.resume is not None and not str(self.resume).strip():
            problems.append("resume must be 'latest' or a checkpoint dir, found an empty string")
        if not 0.0 <= self.kd_weight <= 1.0:
            problems.append(f"kd_weight must be in [0, 1], found {self.kd_weight}")
        if not 0.0 <= self.embeds_dropout < 1.0:
            problems.append(f"embeds_dropout must be in [0, 1), found {self.embeds_dropout}")
        if self.warmup < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            problems.append("warmup, weight_decay and max_grad_norm must be >= 0")
        elif self.warmup >= 1 and not float(self.warmup).is_integer():
            problems.append(f"warmup >= 1 counts steps and must be whole, found {self.warmup}")
        if self.attention_target not in ATTENTION_TARGETS:
            problems.append(f"attention_target must be one of {', '.join(ATTENTION_TARGETS)}, found {self.attention_target!r}")
        if self.precision not in DISTILL_PRECISIONS:
            problems.append(f"precision must be one of {', '.join(DISTILL_PRECISIONS)}, found {self.precision!r}")
        if self.bridge not in BRIDGES:
            problems.append(f"bridge must be one of {', '.join(BRIDGES)}, found {self.bridge!r}")
        if self.layer_map is not None:
            try:
                parse_layer_map(self.layer_map)
            except ConfigError as e:
                problems.append(str(e))
        try:
            self.window()
        except ConfigError as e:
            problems.append(str(e))
        if problems:
            raise ConfigError("invalid distill config: " + "; ".join(problems))

    def window(self) -> WindowConfig:
        return WindowConfig(self.max_seq_length, self.doc_stride, self.max_query_length)

    def _check_paths(self) -> tuple[list[str], set[str]]:
        """Turns one data file into a list of one; names every file list or path that is not
        text (``train: 5`` in a recipe). Returns the problems and the bad fields' names."""
        problems, bad = [], set()
        for name in ("train", "stage1_train"):
            value = getattr(self, name)
            files = [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else value
            if not isinstance(files, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in files):
                problems.append(f"{name} must be a file or a list of files, found {value!r}")
                bad.add(name)
                files = []
            setattr(self, name, [str(p) for p in files])
        for name in ("teacher", "out", "dev", "student", "student_base", "cache_dir", "device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                problems.append(f"{name} must be a string, found {value!r}")
                bad.add(name)
                setattr(self, name, None)
        return problems, bad

    def _coerce_numbers(self) -> list[str]:
        """Turns numeric strings into numbers (YAML reads ``5e-5`` as a string) and
        returns a message per value that is not a number where one is needed."""
        problems = []
        for f in fields(self):
            kind = next((k for k in (int, float) if f.type.startswith(k.__name__)), None)
            value = getattr(self, f.name)
            if kind is None or value is None or isinstance(value, bool):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                problems.append(f"{f.name} must be {'an integer' if kind is int else 'a number'}, found {value!r}")
                setattr(self, f.name, f.default)
                continue
            if kind is int and not number.is_integer():
                problems.append(f"{f.name} must be an integer, found {value!r}")
                setattr(self, f.name, f.default)
            elif not math.isfinite(number):  # inf/nan pass every > 0 check
                problems.append(f"{f.name} must be a finite number, found {value!r}")
                setattr(self, f.name, f.default)
            else:
                setattr(self, f.name, kind(number))
        return problems


def config_from_dict(values: dict, source: str = "recipe") -> DistillConfig:
    """Builds a DistillConfig, naming every unknown key (with a guess) and every bad value at once."""
    known = {f.name for f in fields(DistillConfig)}
    unknown = [k for k in values if k not in known]
    problems = []
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(known), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        problems.append(f"unknown key(s) {', '.join(hints)}")
    try:
        config = DistillConfig(**{k: v for k, v in values.items() if k in known})
    except (ConfigError, TypeError) as e:  # TypeError: e.g. a number where a list was expected
        problems.append(str(e))
    if problems:
        if unknown:
            problems.append(f"known keys: {', '.join(sorted(known))}")
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config
