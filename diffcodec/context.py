"""The lossless chunk with context: the pixels under p(x | z_T) in four checkerboard groups (DESIGN.md section 6).

Group g holds the pixels at (row, column) = GROUPS[g] modulo 2. For group g the context network
(nn/context.py) sees the pixels of groups 0..g-1 and refines the factorised logistic (m, b) of uqdm.pixel_prior:

    m' = m + MEAN_STEP dm,  b' = b exp(dlog_b),  kappa = tanh(raw)
    m'_G <- m'_G + kappa_1 (x_R - m'_R),  m'_B <- m'_B + kappa_2 (x_R - m'_R) + kappa_3 (x_G - m'_G)

so within a pixel G is coded given R, and B given R and G. The encoder then rescales each group's and channel's
b' by the s_k = 1/2 + k / 256 (a byte k, 128 for s = 1) that makes that channel's pixels cheapest: a per-image
correction of the network's confidence, exact in float32 so both sides compute the same b' s_k.

The payload is the 8-byte hash of the context file, the 12 scale bytes (group 0 R, G, B, group 1 R, G, B, ...), then
in the same order one range-coded block each (u32le length, then the bytes of entropy.encode_symbols); the decoder
has every mean and scale before it needs it. The first chunk layout (coder `context`) has no scale bytes: s = 1.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from .entropy import decode_symbols
from .errors import BitstreamError, ModelError
from .nn.context import ContextNet, from_entry, to_entry
from .steps import Coded, code_symbols
from .tiling import run_tiled
from .uqdm import pixel_bits, to_unit

GROUPS = ((0, 0), (1, 1), (0, 1), (1, 0))
"""(row, column) modulo 2 of each group, in coding order."""
MEAN_STEP = 8.0  # pixel units per unit of the network's mean output
CONTEXT_FILE = "context.pt"  # beside a model file: its pixel context network
HASH_SIZE = 8
SCALE_ZERO = 128  # the scale byte of s = 1
SCALE_BYTES = 3 * len(GROUPS)  # one scale byte per group and channel
_SEARCH = ((16, 8), (4, 3), (1, 3))  # (step, reach) of each round of the scale search
_LENGTH = struct.Struct("<I")
T = TypeVar("T")


@dataclass(frozen=True)
class PixelContext:
    """A context network trained for one model at one step count."""

    net: ContextNet
    steps: int  # T: the end of the chain z_T it was trained at; other step counts code without it
    model_hash: bytes  # weights hash of the UQDM it was trained on
    weights_hash: bytes  # first 8 bytes of sha256(context file), written at the start of every chunk it codes


class ChainEnd(NamedTuple):
    """What encoder and decoder both hold at z_T, (1, 3, H, W) each: the inputs of the lossless chunk."""

    z: Tensor
    x_hat: Tensor  # denoise(z_T) clamped to [-1, 1]
    s_hat: Tensor
    m: Tensor  # factorised p(x | z_T): mean and logistic scale in pixel units
    b: Tensor


def earlier_fit_name(file: str, weights_hash: bytes) -> str:
    """The name a fitted file (`file`: context.pt, step_context.pt, refine.pt) keeps beside its model once a refit
    replaces it: `file` with the first 8 bytes of its sha256 in hex before `.pt`. The decoder reads the chunks that
    name those weights with it (and step context fits the post-filter they name); the encoder uses `file` alone."""
    return f"{file.removesuffix('.pt')}.{weights_hash.hex()}.pt"


def earlier_fits(folder: Path, file: str) -> list[Path]:
    """The earlier fits of `file` kept in `folder` (earlier_fit_name), by name."""
    pattern = re.compile(re.escape(file.removesuffix(".pt")) + r"\.[0-9a-f]{16}\.pt")
    return sorted(f for f in folder.iterdir() if pattern.fullmatch(f.name))


def write_file(path: Path, blob: dict) -> None:
    """torch.save a context file, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def read_file(path: Path, kind: str, parse: Callable[[dict], T]) -> T:
    """parse(the dict saved in `path`); any failure to read or parse it is a ModelError naming the file's `kind`."""
    try:
        return parse(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # any failure to read the file is a model error for the user
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{path}: not a diffcodec {kind} file ({type(e).__name__}: {first_line})") from None


def save_context(path: Path, net: ContextNet, steps: int, model_hash: bytes) -> None:
    """Write a context file (config, float32 weights, T, the model's hash), atomically."""
    write_file(path, {**to_entry(net), "steps": steps, "model_hash": model_hash.hex()})


def load_context(path: Path, weights_hash: bytes, device: str | torch.device = "cpu") -> PixelContext:
    """Read a context file written by `save_context`; `weights_hash` is the file's (zoo.weights_hash)."""
    def parse(blob: dict) -> PixelContext:
        net = from_entry(blob).to(device).eval().requires_grad_(False)
        return PixelContext(net, int(blob["steps"]), bytes.fromhex(blob["model_hash"]), weights_hash)

    return read_file(path, "context", parse)


def group_mask(g: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """(H, W) bool: the pixels of group g."""
    dy, dx = GROUPS[g]
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[dy::2, dx::2] = True
    return mask


def context_features(x_hat: Tensor, z: Tensor, log_scale: Tensor, values: Tensor, g: int) -> Tensor:
    """The INPUTS channels of a context network (nn/context.py) for group g, (B, 14, H, W): x_hat, z, a log scale,
    `values` (in the network's units) where groups < g are decoded and zero elsewhere, and the two masks."""
    h, w = z.shape[-2:]
    known = torch.zeros(h, w, dtype=torch.bool, device=z.device)
    for k in range(g):
        known |= group_mask(k, h, w, z.device)
    known = known.expand(z.shape[0], 1, h, w)
    target = group_mask(g, h, w, z.device).expand_as(known)
    return torch.cat([x_hat, z, log_scale, torch.where(known, values, 0.0), known.float(), target.float()], 1)


def group_logistics(net: ContextNet, end: ChainEnd, decoded: Tensor, g: int,
                    split: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(m', b', kappa), (B, 3, H, W) each, for group g given `decoded` (B, 3, H, W) pixels, of which only those
    of groups < g are read; the network runs in halves or tiles (`split`: tiling.regions)."""
    out = run_tiled(net, context_features(end.x_hat, end.z, end.s_hat.log(), to_unit(decoded), g), split)
    m = end.m + MEAN_STEP * out[:, 0:3]  # m' = m + MEAN_STEP dm
    b = end.b * torch.exp(out[:, 3:6])  # b' = b exp(dlog_b)
    return m, b, torch.tanh(out[:, 6:9])


def channel_means(m: Tensor, kappa: Tensor, x: Tensor) -> Tensor:
    """m'_G = m_G + kappa_1 (x_R - m_R), m'_B = m_B + kappa_2 (x_R - m_R) + kappa_3 (x_G - m'_G), on (3, ...)
    tensors; m'_R = m_R. Row c reads only the rows of x before c, so the decoder can fill x one row at a time."""
    r = x[0] - m[0]
    mean_g = m[1] + kappa[0] * r
    mean_b = m[2] + kappa[1] * r + kappa[2] * (x[1] - mean_g)
    return torch.stack([m[0], mean_g, mean_b])


def context_bits(net: ContextNet, end: ChainEnd, pixels: Tensor, g: int) -> Tensor:
    """-log2 P(pixel | z_T, groups < g) of every sub-pixel (B, 3, H, W) under group g's model; only the entries of
    group g's pixels are the group's bits (the training loss and the encoder's accounting)."""
    m, b, kappa = group_logistics(net, end, pixels, g)
    mean = channel_means(m.transpose(0, 1), kappa.transpose(0, 1), pixels.float().transpose(0, 1)).transpose(0, 1)
    return pixel_bits(pixels, mean, b)


def scaled(b: Tensor, k: Tensor) -> Tensor:
    """b' s_k with s_k = 1/2 + k / 256, per channel: b (3, n), k (3,) scale bytes."""
    return b * (0.5 + k.to(b) / 256).unsqueeze(1)


def best_scales(x: Tensor, mean: Tensor, b: Tensor) -> Tensor:
    """The scale byte k (3,) of each channel of x (3, n) whose b' s_k (nearly) minimises -log2 P(x): rounds of steps
    16, 4 and 1 around the best k so far, from SCALE_ZERO; a tie keeps the k found first."""
    best = torch.full((3,), SCALE_ZERO, device=x.device)
    best_bits = pixel_bits(x, mean, b).double().sum(1)
    for step, reach in _SEARCH:
        centre = best
        for j in [*range(-reach, 0), *range(1, reach + 1)]:  # not j = 0: the centre's bits are known
            k = (centre + j * step).clamp(0, 255)
            bits = pixel_bits(x, mean, scaled(b, k)).double().sum(1)
            better = bits < best_bits
            best, best_bits = torch.where(better, k, best), torch.where(better, bits, best_bits)
    return best


def _gather(t: Tensor, mask: Tensor) -> Tensor:
    """(1, 3, H, W) -> (3, n): the sub-pixels of the masked pixels, row-major."""
    return t[0][:, mask]


def encode_pixels(context: PixelContext, end: ChainEnd, pixels: Tensor,
                  after_group: Callable[[], None] | None = None, split: bool = True) -> tuple[Coded, float]:
    """The lossless chunk for pixels (1, 3, H, W) uint8: its payload and its information content, and the
    bits of the float model (for the NELBO); `after_group` is called after each group's network pass; `split`:
    the networks' tiling (tiling.regions, False for format 2 files)."""
    h, w = pixels.shape[-2:]
    scales, blocks, bits, nelbo, clock = [], [], 0.0, 0.0, {"tables": 0.0, "coder": 0.0}
    for g in range(len(GROUPS)):
        mask = group_mask(g, h, w, pixels.device)
        m, b, kappa = (_gather(t, mask) for t in group_logistics(context.net, end, pixels, g, split))
        if after_group:
            after_group()
        x = _gather(pixels, mask)
        mean = channel_means(m, kappa, x.float())
        k = best_scales(x, mean, b)
        b = scaled(b, k)
        scales += k.tolist()
        nelbo += float(pixel_bits(x, mean, b).double().sum())
        for c in range(3):
            coded = code_symbols(x[c].long().cpu().numpy(), mean[c].contiguous(), b[c].contiguous(), lo=0, hi=255)
            blocks += [_LENGTH.pack(len(coded.payload)), coded.payload]
            bits += coded.bits
            for phase, seconds in coded.clock.items():
                clock[phase] += seconds
    return Coded(b"".join([context.weights_hash, bytes(scales), *blocks]), bits, clock), nelbo


def decode_pixels(context: PixelContext, end: ChainEnd, payload: bytes, clock: dict[str, float],
                  after_group: Callable[[], None] | None = None, *, with_scales: bool = True,
                  split: bool = True) -> np.ndarray:
    """The pixels (H, W, 3) uint8 from a lossless chunk of `encode_pixels` (`after_group` and `split` as there);
    without `with_scales`, from the first layout, which has no scale bytes (s = 1)."""
    if payload[:HASH_SIZE] != context.weights_hash:
        raise BitstreamError(f"the lossless chunk was coded with pixel context {payload[:HASH_SIZE].hex()}, "
                             f"not this model's {context.weights_hash.hex()}")
    pos = HASH_SIZE + (SCALE_BYTES if with_scales else 0)  # the first block
    scales = payload[HASH_SIZE:pos] if with_scales else bytes([SCALE_ZERO] * SCALE_BYTES)
    if len(scales) < SCALE_BYTES:
        raise BitstreamError("the lossless chunk ends in its scales: it is corrupt")
    h, w = end.z.shape[-2:]
    pixels = torch.zeros(1, 3, h, w, dtype=torch.uint8, device=end.z.device)
    for g in range(len(GROUPS)):
        mask = group_mask(g, h, w, pixels.device)
        m, b, kappa = (_gather(t, mask) for t in group_logistics(context.net, end, pixels, g, split))
        b = scaled(b, torch.tensor(list(scales[3 * g : 3 * g + 3]), device=b.device))
        if after_group:
            after_group()
        x = torch.zeros_like(m)
        for c in range(3):
            if pos + _LENGTH.size > len(payload):
                raise BitstreamError("the lossless chunk ends early: it is corrupt")
            (n,) = _LENGTH.unpack_from(payload, pos)
            block = payload[pos + _LENGTH.size : pos + _LENGTH.size + n]
            pos += _LENGTH.size + n
            mean = channel_means(m, kappa, x)[c].contiguous()
            x[c] = torch.from_numpy(decode_symbols(block, mean, b[c].contiguous(), lo=0, hi=255, clock=clock)).to(x)
        pixels[0][:, mask] = x.to(torch.uint8)
    if pos != len(payload):
        raise BitstreamError(f"the lossless chunk has {len(payload) - pos} bytes after its last block: it is corrupt")
    return pixels[0].permute(1, 2, 0).cpu().numpy()
