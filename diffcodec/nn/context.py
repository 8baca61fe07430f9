"""The context network: what the values decoded so far say about the rest (DESIGN.md section 6, context).

A small full-resolution residual conv stack. It sees the U-Net's guess x_hat and a scale at z, z itself, the values
already decoded (zero elsewhere) and two masks (decoded, being decoded), and returns per sub-pixel a mean offset, a
log-scale offset and the channel coefficients kappa of diffcodec.context. Its last layer starts at zero, so an
untrained network leaves the model's own prior as it is. The pixel context (context.py) decodes pixels with it; the
step context (step_context.py) a diffusion step's z_s. The post-filter (refine.py) is the same stack with its own
inputs and outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn

INPUTS = 3 + 3 + 3 + 3 + 2  # x_hat, z, a log scale, decoded values, decoded mask, target mask
OUTPUTS = 3 + 3 + 3  # mean offsets, log-scale offsets, channel coefficients (before tanh)


@dataclass(frozen=True)
class ContextConfig:
    """Width and depth of the context network (receptive field: 2 (2 blocks + 2) + 1 pixels across)."""

    width: int = 32
    blocks: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


class ContextNet(nn.Module):
    """(x_hat, z, log scale, decoded, decoded mask, target mask) -> (B, 9, H, W) raw outputs (by default: other
    `inputs` and `outputs` make the same stack for another job)."""

    def __init__(self, config: ContextConfig = ContextConfig(), inputs: int = INPUTS, outputs: int = OUTPUTS) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.inp = nn.Conv2d(inputs, w, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(w, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1))
            for _ in range(config.blocks)
        )
        self.out = nn.Conv2d(w, outputs, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: Tensor) -> Tensor:
        """features: the input channels stacked, (B, inputs, H, W)."""
        h = self.inp(features)
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.silu(h))


def deepen(net: ContextNet, blocks: int) -> ContextNet:
    """`net` with residual blocks added after its own up to `blocks`, each new one starting at the identity (its last
    conv zero): the same function, with more depth to train (on the CPU, training mode)."""
    if blocks < net.config.blocks:
        raise ValueError(f"cannot deepen a network of {net.config.blocks} blocks to {blocks}")
    deeper = ContextNet(replace(net.config, blocks=blocks), net.inp.in_channels, net.out.out_channels)
    deeper.load_state_dict(net.state_dict(), strict=False)  # the new blocks' keys are the ones missing
    for block in deeper.blocks[net.config.blocks:]:
        nn.init.zeros_(block[-1].weight)  # h + block(h) = h
        nn.init.zeros_(block[-1].bias)
    return deeper


def to_entry(net: ContextNet) -> dict:
    """A network as a context file stores it: its config and float32 weights."""
    return {"config": net.config.to_dict(),
            "state_dict": {k: v.detach().float().cpu() for k, v in net.state_dict().items()}}


def from_entry(entry: dict, inputs: int = INPUTS, outputs: int = OUTPUTS) -> ContextNet:
    """The network of a `to_entry` dict (on the CPU, training mode)."""
    net = ContextNet(ContextConfig(**entry["config"]), inputs, outputs)
    net.load_state_dict(entry["state_dict"])
    return net


__all__ = ["INPUTS", "OUTPUTS", "ContextConfig", "ContextNet", "from_entry", "to_entry"]
