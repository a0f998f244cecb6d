"""Atomic, resumable training checkpoints of any set of modules plus the loop's own state.

A checkpoint is one directory, ``OUT/checkpoints/step-N``, written into a temp dir and then
renamed, so a killed run never leaves a half-written one (``state.json`` is its last file;
``list_checkpoints`` ignores a directory without it). It holds:

=========================  ===============================================================
``config.json``,           the module named ``"model"``, saved with ``save_pretrained``
``model.safetensors``,     (HF format): a checkpoint is also a model that transformers and
tokenizer files,           ``QuestionAnswerer`` load; a module without ``save_pretrained``
``pocketqa.json``          goes to ``model.safetensors`` alone. Tokenizer and meta only when
                           given.
``NAME.safetensors``       every other module, e.g. ``projection.safetensors``.
``trainer_state.pt``       ``{"optimizer", "scheduler", "scaler"}`` state dicts (None where
                           not given): tensors and plain containers only.
``rng-RANK.pt``            each rank's RNG states: torch CPU, CUDA (when in use), Python's
                           ``random`` and numpy's global generator.
``state.json``             the loop's free-form JSON state: step, epoch, data position,
                           stage, settings to check on resume...
=========================  ===============================================================

Everything but the weights is read back with ``torch.load(weights_only=True)``: nothing in a
checkpoint is unpickled as code. Example (a distillation stage with a projection)::

    modules = {"model": student, "projection": projection}
    save_checkpoint(checkpoint_dir(out, step), modules, optimizer, scheduler,
                    {"stage": 1, "step": step, "epoch": epoch, "step_in_epoch": b + 1},
                    tokenizer=tokenizer)
    ...
    state = load_checkpoint(resolve_checkpoint(out, "latest"), modules, optimizer, scheduler)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pocketqa.errors import PocketQAError
from pocketqa.modeldir import write_meta
from pocketqa.models import quiet_transformers
from pocketqa.training.distributed import barrier, process_rank

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer_state.pt"
MAIN_MODULE = "model"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives: ``out_dir/checkpoints/step-<step>``."""
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step}"


def save_checkpoint(
    path: str | os.PathLike,
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    state: dict | None = None,
    *,
    scaler=None,
    tokenizer=None,
    meta: dict | None = None,
) -> Path:
    """Writes a resumable checkpoint at ``path`` atomically (temp dir, then rename).

    Call it on every rank of a DDP run (each rank stores its own RNG state; rank 0 writes
    the rest), with the bare modules, not their DistributedDataParallel wrappers.

    Args:
        path: The final checkpoint dir, e.g. ``checkpoint_dir(out, step)``. An existing one
            (a re-run of the same step) is replaced.
        modules: The modules to save by name (Python identifiers). "model" is the main
            model, saved in HF format when it has ``save_pretrained``; the others are saved
            as ``NAME.safetensors``.
        optimizer / scheduler / scaler: Saved with their ``state_dict()`` when given.
        state: The loop's JSON-able state (step, epoch, data position...): ``load_checkpoint``
            returns it.
        tokenizer: Saved beside the main model, so the checkpoint is a usable model dir.
        meta: Written as the checkpoint's ``pocketqa.json``.

    Returns:
        ``path``.
    """
    _check_names(modules)
    path = Path(path)
    state_text = json.dumps(state or {}, indent=2, sort_keys=True) + "\n"  # not JSON-able: fail before writing
    tmp = path.with_name(f".tmp-{path.name}")
    rank = process_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    barrier()
    if rank == 0:
        for name, module in modules.items():
            if name == MAIN_MODULE and hasattr(module, "save_pretrained"):
                with quiet_transformers():  # no "Writing model shards" bar at every checkpoint
                    module.save_pretrained(tmp, safe_serialization=True)
            else:
                from safetensors.torch import save_model

                save_model(module, str(tmp / f"{name}.safetensors"))
        if tokenizer is not None:
            with quiet_transformers():
                tokenizer.save_pretrained(tmp)
        if meta:
            write_meta(tmp, meta)
        trainer = {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        torch.save(trainer, tmp / TRAINER_FILE)
        (tmp / STATE_FILE).write_text(state_text, encoding="utf-8")  # last: it marks a complete checkpoint
        if path.exists():  # only when re-running over an old checkpoint of the same step
            shutil.rmtree(path)
        os.replace(tmp, path)
    barrier()
    return path


def load_checkpoint(
    path: str | os.PathLike,
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    scaler=None,
    *,
    restore_rng: bool = True,
) -> dict:
    """Restores a checkpoint written by ``save_checkpoint`` into ``modules`` (in place).

    Each module is loaded onto the device its parameters are on. The RNG state is this
    rank's (or rank 0's when the run that saved it had fewer processes).

    Args:
        path: A checkpoint dir (see ``resolve_checkpoint``).
        modules: The same names as at saving; each module must have the saved shapes.
            A saved module left out here is not loaded.
        optimizer / scheduler / scaler: Restored when given (and saved).
        restore_rng: Also restore the RNG states, so that dropout and shuffling continue
            as if the run had never stopped.

    Returns:
        The ``state`` dict given to ``save_checkpoint``.

    Raises:
        PocketQAError: ``path`` is not a checkpoint, or a module does not fit it.
    """
    _check_names(modules)
    path = Path(path)
    state = read_checkpoint_state(path)
    for name, module in modules.items():
        if name == MAIN_MODULE and hasattr(module, "save_pretrained"):
            _load_pretrained_weights(path, module)
        else:
            _load_module(path, name, module)
    if optimizer is not None or scheduler is not None or scaler is not None:
        trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=True)
        for what, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
            if target is None:
                continue
            if trainer.get(what) is None:
                if what == "scaler":  # a run that switched precision: the scaler starts afresh
                    continue
                raise PocketQAError(f"{path}: the checkpoint holds no {what} state; resume with the original settings")
            target.load_state_dict(trainer[what])
    if restore_rng:
        rng_file = path / f"rng-{process_rank()}.pt"
        if not rng_file.is_file():
            rng_file = path / "rng-0.pt"
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return state


def read_checkpoint_state(path: str | os.PathLike) -> dict:
    """The ``state`` dict of a checkpoint, without loading anything else."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise PocketQAError(f"{path}: not a pocketqa checkpoint (no {STATE_FILE})")
    return json.loads(state_file.read_text(encoding="utf-8"))


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest (lowest step) first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    found = []
    for p in root.glob("step-*") if root.is_dir() else []:
        m = re.fullmatch(r"step-(\d+)", p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def prune_checkpoints(out_dir: str | os.PathLike, keep: int | None) -> None:
    """Deletes all but the newest ``keep`` checkpoints (0 or None keeps all)."""
    if not keep:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(out_dir: str | os.PathLike, resume: str | os.PathLike) -> Path:
    """The checkpoint a ``--resume`` value names: "latest" (the newest under ``out_dir``) or a dir.

    Raises:
        PocketQAError: naming the dir that is not a checkpoint, or saying that ``out_dir``
            has none (and how to start again).
    """
    if str(resume) != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise PocketQAError(f"--resume {path}: not a checkpoint dir (no {STATE_FILE})")
        return path
    found = list_checkpoints(out_dir)
    if not found:
        raise PocketQAError(
            f"--resume: no checkpoint under {Path(out_dir) / CHECKPOINTS_DIR}; start again with --overwrite"
        )
    return found[-1]


# -- helpers ------------------------------------------------------------------------------


def _check_names(modules: Mapping[str, torch.nn.Module]) -> None:
    bad = [name for name in modules if not _NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"checkpoint module names must be Python identifiers (they name files), found {bad}")


def _device_of(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _load_pretrained_weights(path: Path, model) -> None:
    """Loads the HF-format weights of ``path`` into ``model`` (sharded or not)."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    if not all((path / f).is_file() for f in files):
        raise PocketQAError(f"{path}: checkpoint has no model weights ({files[0]} is missing)")
    device = _device_of(model)
    weights = {}
    for f in files:
        weights.update(load_file(path / f, device=str(device)))
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shapes differ
        raise PocketQAError(f"{path}: checkpoint does not fit the model ({_first_line(e)}); "
                            "resume with the same --model") from None
    # save_pretrained drops tied copies of a weight; those are restored through their twin.
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in weights if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise PocketQAError(
            f"{path}: checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "resume with the same --model"
        )


def _load_module(path: Path, name: str, module: torch.nn.Module) -> None:
    from safetensors.torch import load_model

    file = path / f"{name}.safetensors"
    if not file.is_file():
        raise PocketQAError(f"{path}: checkpoint has no {name!r} module ({file.name} is missing)")
    try:
        missing, unexpected = load_model(module, file, strict=False, device=str(_device_of(module)))
    except RuntimeError as e:  # shapes differ
        raise PocketQAError(f"{file}: does not fit the {name!r} module ({_first_line(e)}); "
                            "resume with the original settings") from None
    if missing or unexpected:
        raise PocketQAError(
            f"{file}: does not fit the {name!r} module (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "resume with the original settings"
        )


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _rng_state() -> dict:
    np_kind, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # as a tensor: torch.load(weights_only=True) refuses numpy arrays
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
