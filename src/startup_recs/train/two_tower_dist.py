"""Device choice and the torchrun process group of the two-tower trainer.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank joins one process group: NCCL on GPUs, gloo on
CPU. Rank 0 validates and writes; :func:`broadcast` shares its numbers, :func:`all_mean` averages
the ranks' losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from startup_recs.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available; ``cuda`` without CUDA is a one-line ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def broadcast(value: float, d: Dist, device: torch.device) -> float:
    if d.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def all_mean(value: torch.Tensor, d: Dist) -> float:
    if d.world > 1:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value = value / d.world
    return float(value.item())
