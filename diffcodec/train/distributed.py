"""Data-parallel training across processes started by `torchrun` (gloo on CPU, nccl on CUDA).

Every rank holds the same weights, draws its own crops, and applies the same all-reduced mean gradient,
so the weights stay identical on all ranks; `check_agreement` verifies it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..codec import resolve_device
from ..errors import DiffcodecError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 alone when not under torchrun)."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device: str = "auto") -> World:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    cuda = resolve_device(device) == "cuda"
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return World(rank, size, dev)


def barrier(world: World) -> None:
    """Wait until every rank gets here (so that no rank tears its process group down while another still works)."""
    if world.size > 1:
        dist.barrier()


def stop() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(model: nn.Module, world: World) -> None:
    """Copy rank 0's weights and buffers to every rank."""
    if world.size > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(model: nn.Module, world: World) -> None:
    """grad <- mean over ranks of grad, in one flat all-reduce."""
    if world.size == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def gather(obj: object, world: World) -> list[object]:
    """One picklable object from every rank, in rank order (on every rank)."""
    if world.size == 1:
        return [obj]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def from_main(flag: bool, world: World) -> bool:
    """Rank 0's flag, on every rank."""
    if world.size == 1:
        return flag
    t = torch.tensor([int(flag)], device=world.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean(value: float, world: World) -> float:
    """The mean of a float over ranks."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def fingerprint(model: nn.Module) -> str:
    """sha256 prefix of all weights: equal on every rank while the ranks agree."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_agreement(model: nn.Module, world: World) -> str:
    """The weights' fingerprint, after checking every rank holds the same weights."""
    prints = gather(fingerprint(model), world)
    if len(set(prints)) != 1:
        raise DiffcodecError(f"training ranks disagree: weight fingerprints {prints}")
    return str(prints[0])
