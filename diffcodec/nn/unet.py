"""A fully convolutional, gamma-conditioned U-Net with an eps head and a learned-scale head."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Down, GammaEmbedding, Stage, Up


@dataclass(frozen=True)
class UNetConfig:
    """Widths and depths per resolution (the first level works at H/2 after a space-to-depth)."""

    channels: tuple[int, ...] = (64, 96, 128)
    blocks: tuple[int, ...] = (2, 2, 2)
    emb_dim: int = 128

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)


class UNet(nn.Module):
    """(z_t, gamma_t) -> (eps_hat, s_raw), both shaped like z_t."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        ch, nb = config.channels, config.blocks
        self.embed = GammaEmbedding(config.emb_dim)
        self.stem = nn.Conv2d(12, ch[0], 3, padding=1)
        self.encoder = nn.ModuleList(Stage(c, b, config.emb_dim) for c, b in zip(ch, nb))
        self.downs = nn.ModuleList(Down(ch[i], ch[i + 1]) for i in range(len(ch) - 1))
        self.ups = nn.ModuleList(Up(ch[i + 1], ch[i]) for i in range(len(ch) - 1))
        self.decoder = nn.ModuleList(Stage(ch[i], nb[i], config.emb_dim) for i in range(len(ch) - 1))
        self.head = nn.Conv2d(ch[0], 4 * 6, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, z: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.embed(gamma.expand(z.shape[0]))
        h = self.stem(F.pixel_unshuffle(z, 2))
        skips = []
        for i, stage in enumerate(self.encoder):
            h = stage(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(len(self.ups))):
            h = self.decoder[i](self.ups[i](h) + skips[i], emb)
        out = F.pixel_shuffle(self.head(F.silu(h)), 2)
        eps_hat, s_raw = out.chunk(2, dim=1)
        return eps_hat, s_raw
