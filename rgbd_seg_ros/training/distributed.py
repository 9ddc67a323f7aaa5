"""DistributedDataParallel plumbing: torchrun's environment -> process group -> device.

``torchrun --nproc_per_node N -m rgbd_seg_ros.training.run ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`setup` then joins the group with NCCL on GPUs
and gloo on CPU. Without those variables (or with WORLD_SIZE=1) everything runs in one
process and the collective helpers are no-ops. Only rank 0 writes files.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))
    owns_group: bool = False  # True: setup() created the process group; teardown() ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = 'auto', local_rank: int = 0) -> torch.device:
    """'auto': cuda:<local_rank> when CUDA is available, else CPU."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(name)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', local_rank)
    return device


def setup(device_name: str = 'auto') -> DistContext:
    """Join (or reuse) the process group described by the environment."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get('LOCAL_RANK', rank))
        return DistContext(rank, world, local, pick_device(device_name, local), False)
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return DistContext(device=pick_device(device_name, 0))
    rank = int(os.environ['RANK'])
    local = int(os.environ.get('LOCAL_RANK', rank))
    device = pick_device(device_name, local)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group(
        'nccl' if device.type == 'cuda' else 'gloo', rank=rank, world_size=world
    )
    return DistContext(rank, world, local, device, True)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_scalar(ctx: DistContext, value: float) -> float:
    """Average of a float over ranks."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t) / ctx.world_size


def any_flag(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when any rank says True (cooperative stop)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port that is free right now on ``host`` (for single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
