"""image -> steps -> chunks -> file, and back: the whole data path of diffcodec in one place.

Encoder and decoder walk the same ladder (`_Ladder`): at step i both run the network on z_{t_i},
form the prior p(z_{t_{i+1}} | z_{t_i}) and the shared dither u; the encoder sends
k = round((mu_q - mu_p) / delta + u) (DESIGN.md section 2), the decoder receives it, and both set
z_s = (k - u) delta + mu_p. The last chunk codes the pixels under p(x | z_0): the last rung is exact.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import rng
from .bitstream import CODER_UQ, CODERS, Chunk, Header, Stream, read_stream, write_stream
from .entropy import decode_symbols, encode_symbols
from .errors import BadInputError, BitstreamError, ModelError
from .image import SourceImage, load_image, to_pil
from .uqdm import (
    UQDM,
    denoise,
    logistic_scale,
    pixel_bits,
    pixel_prior,
    posterior,
    posterior_width,
    prior,
    step_bits,
    to_pixel_units,
    to_unit,
    top_bits,
)
from .schedule import alpha, sigma
from .zoo import DEFAULT_MODEL, LoadedModel, load_model

RECONS = ("denoise", "flow", "ancestral")
Progress = Callable[[int, int], None]  # (done, total) after each network call


@dataclass
class Timer:
    """Seconds spent in the network, the rate tables (step parameters and pmf rows) and the entropy coder."""

    network: float = 0.0
    clock: dict[str, float] = field(default_factory=lambda: {"tables": 0.0, "coder": 0.0})

    def as_dict(self, total: float) -> dict[str, float]:
        return {"network": self.network, "tables": self.clock["tables"], "coder": self.clock["coder"], "total": total}


@dataclass(frozen=True)
class Rung:
    """The image after `rung` chunks, with the file bytes needed to reach it."""

    rung: int
    pixels: np.ndarray  # (H, W, 3) uint8
    bytes: int  # bytes of the chunk that completes this rung (0 for rung 0)
    cum_bytes: int  # file bytes up to and including that chunk (header included)
    bpp: float  # cum_bytes * 8 / (H W)
    ideal_bits: float | None = None  # information content of that chunk (encoder side only)
    psnr: float | None = None  # against the original (encoder side only)


@dataclass
class EncodeResult:
    """The file and what it cost."""

    data: bytes
    rungs: list[Rung]
    ideal_bits: float  # information content of all chunks under the quantised tables
    nelbo_bits: float  # the model's negative ELBO of this image (float pmf, top KL included)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        return self.rungs[-1].bpp


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is present, else 'cpu'; 'cuda' without one is refused.
    A file must be decoded on the device kind it was encoded on (the network's floats differ)."""
    if device not in DEVICES:
        raise BadInputError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("device cuda: no CUDA device is available here; use --device cpu")
    return device


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """x in [-1, 1] (1, 3, H, W) -> nearest pixels (H, W, 3) uint8."""
    p = to_pixel_units(x).round().clamp(0, 255).to(torch.uint8)
    return p[0].permute(1, 2, 0).cpu().numpy()


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).float().cpu()


def step_coding_model(u: torch.Tensor, sigma_p: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P(k | u) = G((k - u + 1/2) delta) - G((k - u - 1/2) delta): a discretized logistic in k
    of mean u and scale b / delta (b the logistic scale of sigma_p); returns flat (mean, scale)."""
    return _flat(u), _flat(logistic_scale(sigma_p) / delta)


class _Ladder:
    """The shared walk of encoder and decoder down t_0 = 1 > ... > t_T = 0."""

    def __init__(self, loaded: LoadedModel, seed: int, height: int, width: int, timer: Timer,
                 progress: Progress | None) -> None:
        self.model: UQDM = loaded.model
        self.device = next(self.model.parameters()).device
        self.seed, self.timer, self.progress = seed, timer, progress
        self.shape = (1, 3, height, width)
        self.T = self.model.steps
        self.gammas = self.model.gammas().detach()
        self.i = 0
        self.z = rng.normal(seed, rng.TOP_NOISE, 0, self.shape, self.device)  # z_1 ~ N(0, I) from the seed
        self._predict()

    def _predict(self) -> None:
        t = time.perf_counter()
        with torch.no_grad():
            self.eps_hat, self.s_hat = self.model.predict(self.z, self.gammas[self.i])
        self.timer.network += time.perf_counter() - t
        if self.progress:
            self.progress(self.i + 1, self.T + 1)

    def denoised(self) -> torch.Tensor:
        """x_hat = (z - sigma eps_hat) / alpha at the current step."""
        return denoise(self.z, self.eps_hat, self.gammas[self.i])

    def step_prior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """mu_p, sigma_p, delta of step i, and the dither u shared through the seed."""
        g_t, g_s = self.gammas[self.i], self.gammas[self.i + 1]
        mu_p, sigma_p = prior(self.z, self.eps_hat, self.s_hat, g_t, g_s)
        delta = posterior_width(g_t, g_s)
        u = rng.dither(self.seed, self.i, self.shape, self.device)
        return mu_p, sigma_p, delta, u


    def advance(self, k: torch.Tensor, mu_p: torch.Tensor, delta: torch.Tensor, u: torch.Tensor) -> None:
        """z_s = (k - u) delta + mu_p, then the network at the next step."""
        self.z = (k.to(self.device).reshape(self.shape).float() - u) * delta + mu_p
        self.i += 1
        self._predict()

    def pixel_model(self) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x | z_0) as (mean, scale) per sub-pixel in pixel units."""
        m, b = pixel_prior(self.z, self.eps_hat, self.s_hat, self.gammas[self.T])
        return _flat(m), _flat(b)

    def reconstruct(self, recon: str) -> np.ndarray:
        """The image shown at the current step: denoise, flow (DDIM to t = 0) or ancestral sampling."""
        if recon == "denoise" or self.i == self.T:
            return _to_uint8(self.denoised().clamp(-1, 1))
        z, eps_hat, s_hat = self.z, self.eps_hat, self.s_hat
        with torch.no_grad():
            for j in range(self.i, self.T):
                g_t, g_s = self.gammas[j], self.gammas[j + 1]
                if recon == "flow":  # z_s = alpha_s x_hat + sigma_s eps_hat
                    x_hat = denoise(z, eps_hat, g_t).clamp(-1, 1)
                    z = alpha(g_s) * x_hat + sigma(g_s) * eps_hat
                else:  # z_s ~ p(z_s | z_t): logistic(mu_p, sigma_p) + U(-delta/2, delta/2)
                    mu_p, sigma_p = prior(z, eps_hat, s_hat, g_t, g_s)
                    delta = posterior_width(g_t, g_s)
                    v, w = rng.uniform(self.seed, rng.ANCESTRAL, j, (2, *self.shape), self.device)
                    v = v.clamp(1e-7, 1 - 1e-7)
                    logistic = logistic_scale(sigma_p) * (torch.log(v) - torch.log1p(-v))  # inverse CDF
                    z = mu_p + logistic + (w - 0.5) * delta
                eps_hat, s_hat = self.model.predict(z, g_s)
            return _to_uint8(denoise(z, eps_hat, self.gammas[self.T]).clamp(-1, 1))


def _pixels_tensor(src: SourceImage, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(src.pixels.copy()).permute(2, 0, 1)[None].contiguous().to(device)


def encode_report(image: str | Path | Image.Image | np.ndarray, model: str | Path = DEFAULT_MODEL,
                  seed: int | None = None, device: str = "cpu", progress: Progress | None = None) -> EncodeResult:
    """Encode an image into a diffcodec file and report every rung's bytes, bits and PSNR (denoise)."""
    t_start = time.perf_counter()
    src = load_image(image)
    loaded = load_model(model, device)
    seed = secrets.randbits(63) if seed is None else int(seed)
    h, w = src.pixels.shape[:2]
    header = Header(loaded.name, loaded.weights_hash, h, w, src.mode, src.palette, seed, loaded.model.steps)
    timer = Timer()
    ladder = _Ladder(loaded, seed, h, w, timer, progress)
    pixels = _pixels_tensor(src, ladder.device)
    x = to_unit(pixels)
    chunks, bits, psnrs = [], [], [psnr(ladder.reconstruct("denoise"), src.pixels)]
    nelbo = 0.0
    for i in range(ladder.T):
        t = time.perf_counter()
        mu_p, sigma_p, delta, u = ladder.step_prior()
        mean, scale = step_coding_model(u, sigma_p, delta)
        mu_q, _ = posterior(ladder.z, x, ladder.gammas[i], ladder.gammas[i + 1])
        k = torch.round((mu_q - mu_p) / delta + u)  # k = round((mu_q - mu_p) / delta + u)
        timer.clock["tables"] += time.perf_counter() - t
        payload, b = encode_symbols(_flat(k).long().numpy(), mean, scale, clock=timer.clock)
        z_s = (k - u) * delta + mu_p
        nelbo += float(step_bits(z_s, mu_p, sigma_p, delta).double().sum())
        chunks.append(Chunk(CODER_UQ, payload))
        bits.append(b)
        ladder.advance(k, mu_p, delta, u)
        psnrs.append(psnr(ladder.reconstruct("denoise"), src.pixels))
    m, b_x = ladder.pixel_model()
    payload, b = encode_symbols(_flat(pixels).long().numpy(), m, b_x, lo=0, hi=255, clock=timer.clock)
    nelbo += float(pixel_bits(_flat(pixels), m, b_x).double().sum())
    nelbo += float(top_bits(x, ladder.gammas[0]).double().sum())  # not sent: z_1 comes from the seed
    chunks.append(Chunk(CODER_UQ, payload))
    bits.append(b)
    psnrs.append(math.inf)
    data = write_stream(header, chunks)
    rungs = [
        Rung(r.rung, r.pixels, r.bytes, r.cum_bytes, r.bpp, ideal_bits=bits[r.rung - 1] if r.rung else 0.0, psnr=p)
        for r, p in zip(rung_table(read_stream(data)), psnrs)
    ]
    total = time.perf_counter() - t_start
    return EncodeResult(data, rungs, float(sum(bits)), nelbo, timer.as_dict(total))


def encode(image: str | Path | Image.Image | np.ndarray, model: str | Path = DEFAULT_MODEL,
           seed: int | None = None, device: str = "cpu", progress: Progress | None = None) -> bytes:
    """Encode an image (path, PIL image or uint8 array) into the bytes of a diffcodec file."""
    return encode_report(image, model, seed, device, progress).data


def rung_table(stream: Stream) -> list[Rung]:
    """Bytes per rung from the parsed container (pixels left empty)."""
    h, w = stream.header.height, stream.header.width
    empty = np.zeros((0, 0, 3), np.uint8)
    rows = [Rung(0, empty, 0, stream.header_size, stream.header_size * 8 / (h * w))]
    for k, span in enumerate(stream.spans, start=1):
        rows.append(Rung(k, empty, span.size, span.end, span.end * 8 / (h * w)))
    return rows


def open_stream(data: bytes, model: str | Path | None = None, device: str = "cpu") -> tuple[Stream, LoadedModel]:
    """Parse a file and load the model it was coded with (checked by weights hash)."""
    stream = read_stream(data)
    loaded = load_model(model if model is not None else stream.header.model_name, device)
    if loaded.weights_hash != stream.header.weights_hash:
        raise ModelError(
            f"stream was coded with model {stream.header.model_name!r} (weights {stream.header.weights_hash.hex()}), "
            f"but {loaded.path} has weights {loaded.weights_hash.hex()}: pass the matching model with --model"
        )
    for i, chunk in enumerate(stream.chunks):
        if chunk.coder != CODER_UQ:
            raise BitstreamError(f"chunk {i}: coder {CODERS.get(chunk.coder, chunk.coder)!r} is not supported by this version")
    return stream, loaded


def iter_rungs(data: bytes, recon: str = "denoise", upto: int | None = None, model: str | Path | None = None,
               device: str = "cpu", progress: Progress | None = None, only_last: bool = False,
               timer: Timer | None = None) -> Iterator[Rung]:
    """Decode rung 0, 1, ... up to `upto` (default: every complete chunk present), yielding each as it is ready
    (only rung `upto` with `only_last`, which skips the other rungs' reconstructions); `timer`, if given,
    collects the seconds of network, tables and coder."""
    if recon not in RECONS:
        raise BadInputError(f"unknown reconstruction {recon!r}: choose one of {', '.join(RECONS)}")
    stream, loaded = open_stream(data, model, device)
    table = rung_table(stream)
    last = len(stream.chunks) if upto is None else upto
    if not 0 <= last <= len(stream.chunks):
        raise BadInputError(f"rung {last} is not in this file: it holds rungs 0 to {len(stream.chunks)}")
    h, w = stream.header.height, stream.header.width
    ladder = _Ladder(loaded, stream.header.seed, h, w, timer or Timer(), progress)

    def rung(k: int, pixels: np.ndarray) -> Rung:
        r = table[k]
        return Rung(k, pixels, r.bytes, r.cum_bytes, r.bpp)

    if last == 0 or not only_last:
        yield rung(0, ladder.reconstruct(recon))
    for i, chunk in enumerate(stream.chunks[:last]):
        if i < ladder.T:
            mu_p, sigma_p, delta, u = ladder.step_prior()
            k = torch.from_numpy(decode_symbols(chunk.payload, *step_coding_model(u, sigma_p, delta), clock=ladder.timer.clock))
            ladder.advance(k, mu_p, delta, u)
            if i + 1 == last or not only_last:
                yield rung(i + 1, ladder.reconstruct(recon))
        else:
            m, b = ladder.pixel_model()
            pixels = decode_symbols(chunk.payload, m, b, lo=0, hi=255, clock=ladder.timer.clock).astype(np.uint8)
            yield rung(i + 1, pixels.reshape(3, h, w).transpose(1, 2, 0).copy())


def decode(data: bytes, rung: int | None = None, recon: str = "denoise", model: str | Path | None = None,
           device: str = "cpu", progress: Progress | None = None) -> np.ndarray:
    """Decode a diffcodec file to (H, W, 3) uint8 pixels at `rung` (default: the best rung present)."""
    last = None
    for last in iter_rungs(data, recon, rung, model, device, progress, only_last=True):
        pass
    assert last is not None
    return last.pixels


def decode_rungs(data: bytes, recon: str = "denoise", model: str | Path | None = None,
                 device: str = "cpu", progress: Progress | None = None) -> list[Rung]:
    """Every rung present in the file, with its pixels, bytes and bits per pixel."""
    return list(iter_rungs(data, recon, None, model, device, progress))


def decode_image(data: bytes, rung: int | None = None, recon: str = "denoise", model: str | Path | None = None,
                 device: str = "cpu", progress: Progress | None = None) -> Image.Image:
    """Like `decode`, as a PIL image in the original mode (exactly at the lossless rung)."""
    stream = read_stream(data)
    pixels = decode(data, rung, recon, model, device, progress)
    last = len(stream.chunks) if rung is None else rung
    exact = last == stream.header.steps + 1
    return to_pil(pixels, stream.header.mode, stream.header.palette, exact)
