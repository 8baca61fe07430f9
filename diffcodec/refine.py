"""The post-filter: a lossy rung's image refined by a small network of that rung (the decoder's side only).

At rung k the decoder holds z = z_{t_k} and the U-Net's x_hat = (z - sigma eps_hat) / alpha, the posterior mean
the network was trained to give. A small network per rung (nn/context.py's stack, its last layer starting at zero)
learns what the U-Net still gets wrong there, from x_hat, z and log s_hat:

    x_hat' = clamp(x_hat + r_k(x_hat, z, log s_hat), -1, 1)

trained by mean squared error on crops taken down the codec's chain (train/refine.py). Nothing is sent for it: a
file's bytes and its rung checks (made on the unrefined x_hat, which verifies the decoded chain) are the same with
or without it, so a decoder without refine.pt shows the unrefined rungs of the same file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .context import read_file, write_file
from .nn.context import ContextConfig, ContextNet, from_entry, to_entry
from .tiling import run_tiled

REFINE_FILE = "refine.pt"  # beside a model file: its post-filter networks
INPUTS = 3 + 3 + 3  # x_hat, z, log s_hat
OUTPUTS = 3  # the correction to x_hat


@dataclass(frozen=True)
class Refiners:
    """The post-filter networks of one model: one per rung k (z at t_k of the model's grid), for the rungs it has."""

    nets: dict[int, ContextNet]
    model_hash: bytes  # weights hash of the UQDM they were trained on
    weights_hash: bytes  # first 8 bytes of sha256(refine file)
    net_hashes: dict[int, bytes]  # per rung, a hash of its network: equal in two fits that share that network


def _net_hash(net: ContextNet) -> bytes:
    """First 8 bytes of sha256 of a network's config and weights: equal for equal networks, in any file."""
    h = hashlib.sha256(repr(net.config).encode())
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.digest()[:8]


def new_refiner(width: int, blocks: int) -> ContextNet:
    """A post-filter network that leaves x_hat as it is until trained."""
    return ContextNet(ContextConfig(width, blocks), INPUTS, OUTPUTS)


def refine(net: ContextNet, x_hat: Tensor, z: Tensor, s_hat: Tensor, split: bool = True) -> Tensor:
    """x_hat' = clamp(x_hat + r(x_hat, z, log s_hat), -1, 1), (B, 3, H, W), in halves or tiles (tiling.regions)."""
    return (x_hat + run_tiled(net, torch.cat([x_hat, z, s_hat.log()], 1), split)).clamp(-1, 1)


def save_refiners(path: Path, nets: dict[int, ContextNet], model_hash: bytes) -> None:
    """Write a refine file (per rung: config and float32 weights; the model's hash), atomically."""
    write_file(path, {"nets": {str(k): to_entry(net) for k, net in nets.items()}, "model_hash": model_hash.hex()})


def load_refiners(path: Path, weights_hash: bytes, device: str | torch.device = "cpu") -> Refiners:
    """Read a refine file written by `save_refiners`; `weights_hash` is the file's (zoo.weights_hash)."""
    def parse(blob: dict) -> Refiners:
        nets = {int(k): from_entry(entry, INPUTS, OUTPUTS).to(device).eval().requires_grad_(False)
                for k, entry in blob["nets"].items()}
        return Refiners(nets, bytes.fromhex(blob["model_hash"]), weights_hash,
                        {k: _net_hash(net) for k, net in nets.items()})

    return read_file(path, "refine", parse)


__all__ = ["REFINE_FILE", "Refiners", "load_refiners", "new_refiner", "refine", "save_refiners"]
