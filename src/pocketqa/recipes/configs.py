"""Settings of the training recipes: ``TrainConfig`` (fine-tuning) and ``DistillConfig``.

Recipe YAML keys and command-line flags are these field names (``--learning-rate`` for
``learning_rate``); each field's help text is the flag's. Type coercion, "did you mean" for
unknown keys and the one error listing every problem come from :mod:`pocketqa.config`;
``problems`` below adds the range and consistency checks of each command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pocketqa.config import device_name, setting, validate
from pocketqa.data.features import WindowConfig
from pocketqa.data.formats import FORMATS
from pocketqa.data.squad import OFFSET_MODES
from pocketqa.errors import ConfigError
from pocketqa.training.layer_map import parse_layer_map

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DISTILL_PRECISIONS = ("auto", "bf16", "fp32")
STAGES = ("1", "2", "both")
ATTENTION_TARGETS = ("scores", "probs")
BRIDGES = ("auto", "off")

# The help of the settings both commands share.
_DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda when available)"
_WARMUP_HELP = "linear warmup: a fraction of the steps if < 1, else a number of steps"
_FORMAT_HELP = "layout of the data files (default: from each name; see docs/data.md)"
_OFFSETS_HELP = ("a wrong answer_start: strict refuses the file; repair moves it to the nearest occurrence of its "
                 "text and drops answers whose text is not in the context (one summary line)")


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run (``pocketqa train``).

    Defaults follow transformers' run_squad.py (warmup 0, weight decay 0, clip 1.0,
    Adam eps 1e-8, seed 42, max_query_length 64) and card 1 (lr 3e-5, batch 16, 384/128).
    The order of the fields is the order of the ``recipe`` recorded in pocketqa.json.
    """

    model: str | None = setting(
        None, "base model: HF dir, hub id or pip:NAME (a QA head is added if missing)", group="model", path="model"
    )
    train: str | None = setting(None, "training data: SQuAD JSON, squad_v2 rows (.parquet, .jsonl, .csv) or hf:NAME:SPLIT", group="data",
                                path="input", metavar="FILE")
    dev: str | None = setting(None, "dev file: evaluated at the end (and every --eval-steps); its best-F1 "
                              "threshold is stored", group="data", path="input", metavar="FILE")
    format: str | None = setting(None, _FORMAT_HELP, group="data", choices=FORMATS)
    offsets: str = setting("strict", _OFFSETS_HELP, group="data", choices=OFFSET_MODES[:2])
    out: str | None = setting(None, "output directory (HF checkpoint, tokenizer, pocketqa.json, log.jsonl)",
                              group="output", metavar="DIR")
    name: str | None = setting(None, "display name stored in pocketqa.json (default: the --out dir's name)",
                               group="output")
    max_seq_length: int = setting(384, "tokens per window (question + context + specials)", group="windows")
    doc_stride: int = setting(128, "context tokens shared by consecutive windows of a long context", group="windows")
    max_query_length: int = setting(64, "question tokens kept", group="windows")
    learning_rate: float = setting(3e-5, "peak AdamW learning rate", group="optimisation", aliases=("--lr",))
    epochs: int = setting(2, "passes over the training windows (ignored when --max-steps is given)",
                          group="optimisation")
    max_steps: int | None = setting(None, "total optimizer steps (overrides --epochs)", group="optimisation")
    batch_size: int = setting(16, "GLOBAL batch: windows per optimizer step over all processes",
                              group="optimisation")
    grad_accum: int = setting(1, "micro-batches per step and process (splits --batch-size; same math, less memory)",
                              group="optimisation")
    warmup: float = setting(0.0, _WARMUP_HELP, group="optimisation")
    weight_decay: float = setting(0.0, "AdamW weight decay (not on biases and LayerNorm)", group="optimisation")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)", group="optimisation")
    adam_epsilon: float = setting(1e-8, "AdamW epsilon", group="optimisation")
    seed: int = setting(42, "random seed (initialisation, shuffling, dropout)", group="optimisation")
    save_steps: int = setting(1000, "checkpoint every N steps (0 = never)", group="checkpoints")
    keep_checkpoints: int | None = setting(2, "keep the newest N checkpoints (0 = all)", group="checkpoints")
    eval_steps: int | None = setting(None, "also evaluate on --dev every N steps", group="evaluation")
    eval_batch_size: int = setting(64, "windows per forward pass when evaluating", group="evaluation")
    log_steps: int = setting(50, "log loss, learning rate and throughput every N steps", group="runtime")
    precision: str = setting("auto", "auto: bf16 on CUDA, fp32 on CPU", group="runtime", choices=PRECISIONS)
    device: str | None = setting(None, _DEVICE_HELP, group="runtime", check=device_name)
    cache_dir: str | None = setting(None, "feature cache (default: $POCKETQA_CACHE or ~/.cache/pocketqa)",
                                    group="runtime", metavar="DIR")
    resume: str | None = setting(
        None, "continue a killed run from its latest checkpoint (or the checkpoint dir given)",
        group="checkpoints", nargs="?", const="latest", metavar="DIR",
    )
    overwrite: bool = setting(False, "replace the results of an earlier run in --out", group="output")
    compile: bool = setting(False, "run the model through torch.compile", group="runtime")

    def __post_init__(self) -> None:
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistillConfig:
    """Settings of ``pocketqa distill`` (TinyBERT's two stages).

    Defaults are card 2's (Haystack TinyBERT, see the shipped recipe tinybert-6l-768d-squad2).
    The student is a checkpoint (``student``), or layers picked from ``student_base``, or a
    fresh small config (``hidden``, ``heads``, ``intermediate``).
    """

    teacher: str | None = setting(None, "fine-tuned QA teacher: HF dir, hub id or pip:NAME", group="model",
                                  path="model")
    out: str | None = setting(None, "output directory (stage 1 goes to OUT/stage1 with --stage both)",
                              group="output", metavar="DIR")
    train: list[str] = setting(
        help="SQuAD training file(s), concatenated (stage 2, and stage 1 by default)", group="data",
        path="input", metavar="FILE", default_factory=list,
    )
    stage1_train: list[str] = setting(help="stage-1 data, e.g. the augmented set (default: --train)", group="data",
                                      path="input", metavar="FILE", default_factory=list)
    dev: str | None = setting(None, "dev file: evaluated after stage 2; its best-F1 threshold is stored",
                              group="data", path="input", metavar="FILE")
    format: str | None = setting(None, _FORMAT_HELP, group="data", choices=FORMATS)
    offsets: str = setting("strict", _OFFSETS_HELP, group="data", choices=OFFSET_MODES[:2])
    stage: str = setting("both", "which stages to run: 1 (intermediate layers), 2 (prediction layer) or both",
                         group="stages", choices=STAGES)
    student: str | None = setting(None, "student checkpoint (e.g. a stage-1 output for --stage 2)", group="model",
                                  path="model")
    student_base: str | None = setting(None, "build the student from this model (default: the teacher)",
                                       group="model", path="model")
    student_layers: int | None = setting(None, "keep K evenly spaced layers of the base", group="model")
    hidden: int | None = setting(None, "fresh student: hidden size", group="model")
    heads: int | None = setting(None, "fresh student: attention heads", group="model")
    intermediate: int | None = setting(None, "fresh student: feed-forward size", group="model")
    max_seq_length: int = setting(384, "tokens per window (question + context + specials)", group="windows")
    doc_stride: int = setting(128, "context tokens shared by consecutive windows of a long context", group="windows")
    max_query_length: int = setting(64, "question tokens kept", group="windows")
    # AdamW with linear warmup then linear decay, per stage
    batch_size: int = setting(26, "windows per optimizer step", group="optimisation")
    stage1_epochs: int = setting(5, "stage-1 passes over its data", group="optimisation")
    stage1_learning_rate: float = setting(5e-5, "stage-1 peak learning rate", group="optimisation",
                                          aliases=("--stage1-lr",))
    stage2_epochs: int = setting(5, "stage-2 passes over its data", group="optimisation")
    stage2_learning_rate: float = setting(3e-5, "stage-2 peak learning rate", group="optimisation",
                                          aliases=("--stage2-lr",))
    max_steps: int | None = setting(
        None, "optimizer steps per stage; overrides --stage1-epochs and --stage2-epochs", group="optimisation"
    )  # when given, each stage runs exactly this many steps whatever its epochs
    warmup: float = setting(0.2, _WARMUP_HELP, group="optimisation")
    weight_decay: float = setting(0.01, "AdamW weight decay", group="optimisation")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)", group="optimisation")
    embeds_dropout: float = setting(0.1, "dropout on the encoder output before the QA head in stage 2",
                                    group="optimisation")
    temperature: float = setting(1.0, "softmax temperature of the stage-2 KL", group="losses")
    kd_weight: float = setting(1.0, "w in w * KD + (1 - w) * span loss", group="losses",
                               aliases=("--distillation-loss-weight",))
    attention_loss: bool = setting(
        True, "stage 1 with the attention MSE (--no-attention-loss: e.g. different head counts)", group="losses"
    )
    attention_target: str = setting("scores", "pre-softmax scores (TinyBERT) or probabilities (Haystack)",
                                    group="losses", choices=ATTENTION_TARGETS)
    layer_map: str | None = setting(None, "student:teacher hidden-state pairs, e.g. 0:0,1:2,2:4,3:6 "
                                    "(default: uniform)", group="losses")
    bridge: str = setting(
        "auto", "teacher numbers tokens differently: auto maps ids through a vocabulary bridge when both "
        "tokenizers segment alike; off refuses such a pair", group="model", choices=BRIDGES,
    )
    teacher_batch_size: int = setting(64, "windows per teacher pass when caching its logits", group="runtime")
    cache_dir: str | None = setting(None, "feature and teacher-logit cache (default: ~/.cache/pocketqa)",
                                    group="runtime", metavar="DIR")
    precision: str = setting("auto", "auto: bf16 on CUDA, fp32 on CPU", group="runtime",
                             choices=DISTILL_PRECISIONS)
    device: str | None = setting(None, _DEVICE_HELP, group="runtime", check=device_name)
    seed: int = setting(42, "random seed", group="optimisation")
    log_steps: int = setting(10, "log the losses every N steps", group="runtime")
    overwrite: bool = setting(False, "write into a non-empty --out", group="output")
    resume: str | None = setting(
        None, "continue a killed run from its latest checkpoint (or the checkpoint dir given)",
        group="checkpoints", nargs="?", const="latest", metavar="DIR",
    )
    save_steps: int = setting(1000, "checkpoint every N steps (0 = never)", group="checkpoints")
    keep_checkpoints: int | None = setting(2, "keep the newest N checkpoints (0 = all)", group="checkpoints")

    def __post_init__(self) -> None:
        if isinstance(self.bridge, bool):  # YAML 1.1 reads a bare `off` as False
            self.bridge = "auto" if self.bridge else "off"
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
        """Range and consistency checks; fields in ``skip`` (already reported) are not checked."""
        problems = []
        for name, message in (
            ("teacher", "teacher is required (--teacher DIR or hub id)"),
            ("out", "out is required (--out DIR)"),
            ("train", "train is required (--train FILE [FILE ...])"),
        ):
            if not getattr(self, name) and name not in skip:
                problems.append(message)
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
            if value is not None and value < 1:
                problems.append(f"{name} must be a positive integer, found {value!r}")
        for name in ("stage1_epochs", "stage2_epochs"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be an integer >= 0, found {getattr(self, name)!r}")
        for name in ("stage1_learning_rate", "stage2_learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, found {getattr(self, name)!r}")
        if self.save_steps < 0:
            problems.append(f"save_steps must be >= 0 (0 = never), found {self.save_steps}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 0:
            problems.append(f"keep_checkpoints must be >= 0 (0 keeps all), found {self.keep_checkpoints}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, found {self.max_steps}")
        if not 0.0 <= self.kd_weight <= 1.0:
            problems.append(f"kd_weight must be in [0, 1], found {self.kd_weight}")
        if not 0.0 <= self.embeds_dropout < 1.0:
            problems.append(f"embeds_dropout must be in [0, 1), found {self.embeds_dropout}")
        if self.warmup < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            problems.append("warmup, weight_decay and max_grad_norm must be >= 0")
        elif self.warmup >= 1 and not float(self.warmup).is_integer():
            problems.append(f"warmup >= 1 counts steps and must be whole, found {self.warmup}")
        if self.resume and self.overwrite:
            problems.append("resume and overwrite exclude each other: pick one")
        if self.layer_map is not None:
            try:
                parse_layer_map(self.layer_map)
            except ConfigError as e:
                problems.append(str(e))
        if not skip.intersection(("max_seq_length", "doc_stride", "max_query_length")):
            try:
                self.window()
            except ConfigError as e:
                problems.append(str(e))
        return problems

    def window(self) -> WindowConfig:
        return WindowConfig(self.max_seq_length, self.doc_stride, self.max_query_length)


@dataclass
class MLMHeadConfig:
    """Settings of ``pocketqa mlm-head``."""

    steps: int = setting(300, "optimizer steps", group="training")
    batch_size: int = setting(32, "context pieces per step", group="training")
    lr: float = setting(2e-3, "peak AdamW learning rate (linear warmup, cosine decay to 10%)", group="training")
    max_length: int = setting(128, "tokens per context piece, special tokens included", group="data")
    mask_prob: float = setting(0.15, "share of the tokens masked", group="data", flag=False)
    eval_contexts: int = setting(200, "held-out contexts for the accuracy", group="evaluation")
    seed: int = setting(0, "seed of the training batches and masks", group="training")
    top_k: int = setting(15, "k of the reported top-k accuracy", group="evaluation", flag=False)

    def __post_init__(self) -> None:
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
        """Range checks; fields in ``skip`` were already reported."""
        checks = [
            ("steps", self.steps >= 1, f"steps must be >= 1, found {self.steps}"),
            ("batch_size", self.batch_size >= 1, f"batch_size must be >= 1, found {self.batch_size}"),
            ("lr", self.lr > 0, f"lr must be > 0, found {self.lr}"),
            ("max_length", self.max_length >= 8, f"max_length must be >= 8, found {self.max_length}"),
            ("mask_prob", 0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), found {self.mask_prob}"),
            ("eval_contexts", self.eval_contexts >= 1, f"eval_contexts must be >= 1, found {self.eval_contexts}"),
            ("top_k", self.top_k >= 1, f"top_k must be >= 1, found {self.top_k}"),
        ]
        return [message for name, ok, message in checks if name not in skip and not ok]
