"""Process-group set-up for ``torchrun`` (DistributedDataParallel) and helpers that work without one.

Every helper here is a no-op (or answers rank 0) in a plain one-process run, so a loop
calls them unconditionally.
"""

from __future__ import annotations

import os

import torch


def init_distributed(device_arg: str | None) -> tuple[int, int, torch.device, bool]:
    """This process's place in a run started by ``torchrun`` (or a plain one-process run).

    Reads torchrun's WORLD_SIZE / RANK / LOCAL_RANK, joins the process group (nccl on CUDA,
    gloo on CPU) unless one is already initialised, and picks this rank's device.

    Args:
        device_arg: The device asked for ("cpu", "cuda", "cuda:1"...), None for cuda when available.

    Returns:
        (rank, world_size, device, owns_group): ``owns_group`` is True when this call
        created the process group, which the caller then closes with ``close_distributed``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = torch.cuda.is_available() and (device_arg is None or device_arg.startswith("cuda"))
    if world <= 1:
        return 0, 1, torch.device(device_arg or ("cuda" if wants_cuda else "cpu")), False
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    if wants_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    return rank, world, device, owns


def close_distributed(owns_group: bool) -> None:
    """Destroys the process group if ``init_distributed`` created it."""
    if owns_group and (d := distributed()) is not None:
        d.destroy_process_group()


def distributed():
    """``torch.distributed`` when a process group is initialised, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    """Waits for every rank (no-op without a process group)."""
    if (d := distributed()) is not None:
        d.barrier()


def process_rank() -> int:
    """This process's rank (0 without a process group)."""
    return d.get_rank() if (d := distributed()) is not None else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums ``tensor`` over ranks in place (unchanged without a process group); returns it."""
    if (d := distributed()) is not None:
        d.all_reduce(tensor)
    return tensor
