"""image -> steps -> chunks -> file, and back: the whole data path of diffcodec in one place.

Encoder and decoder walk the same ladder (`_Ladder`): at step i both run the network on z_{t_i} and form
the prior p(z_{t_{i+1}} | z_{t_i}); the step's coder (steps.py: universal quantization, DESIGN.md section 2, or
shared-seed REC, chosen per step and recorded per chunk) sends q(z_s | z_t, x) and both sides set the same z_s.
The last chunk codes the pixels under p(x | z_T): factorised, or in four checkerboard groups under the model's pixel
context network (context.py) when it has one for T steps. Either way the last rung is exact. Where the model's
codec.json sets `filter_slope`, a step chunk may carry its rung's filter (rung_filter.py, a `filtered` chunk): the
encoder fits it to the original, the decoder shows the rung through it.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import rng
from .determinism import one_thread
from .tiling import SPLIT_SINCE, predict_tiled
from .bitstream import (CHUNK_FRAME_SIZE, CODER_CONTEXT, CODER_CONTEXT_SCALED, CODER_UQ, CODERS, FORMAT_VERSION, Chunk,
                        Header, Stream, read_stream, rung_check, unwrap_filtered, wrap_filtered, write_stream)
from .refine import Refiners, refine
from .rung_filter import FilterStats, RungFilter, apply_filter, filter_stats, fit_filter, pack_filter, unpack_filter
from .context import (CONTEXT_FILE, GROUPS, HASH_SIZE, ChainEnd, PixelContext, decode_pixels, earlier_fit_name,
                      encode_pixels)
from .entropy import decode_symbols
from .step_context import GroupedCoder, grouped_coders, grouped_receiver, part_coder
from .steps import Coded, StepCoder, StepContext, code_symbols, flat, receiver, start
from .errors import BadInputError, BitstreamError, ModelError, ReconstructionCheckError
from .image import SourceImage, load_image, to_pil
from .uqdm import (
    UQDM,
    denoise,
    logistic_scale,
    pixel_bits,
    pixel_prior,
    posterior_width,
    prior,
    to_pixel_units,
    to_unit,
    top_bits,
)
from .schedule import alpha, sigma
from .zoo import DEFAULT_MODEL, LoadedModel, find_by_hash, load_model

RECONS = ("denoise", "unrefined", "flow", "ancestral", "ensemble")
FLIPS = ((), (-1,), (-2,), (-2, -1))  # the views of z the ensemble averages: as is, mirrored, upside down, both
MAX_PIXELS = 2**28
"""Largest H x W the decoder accepts by default (`max_pixels=`, `--max-pixels`): a header claiming more is
refused before anything is allocated."""
CONTEXT_CODERS = (CODER_CONTEXT, CODER_CONTEXT_SCALED)
"""Coders of a lossless chunk under the pixel context: the encoder writes the second; the first (no scale bytes)
still decodes."""
Progress = Callable[[int, int], None]  # (done, total) after each network call


@dataclass
class Timer:
    """Seconds spent in the network, the rate tables (step parameters and pmf rows), the entropy coder, REC
    (candidates, scoring, index coding) and the step context networks."""

    network: float = 0.0
    clock: dict[str, float] = field(default_factory=lambda: {"tables": 0.0, "coder": 0.0, "rec": 0.0,
                                                             "context": 0.0})

    def as_dict(self, total: float) -> dict[str, float]:
        return {"network": self.network, **self.clock, "total": total}


@dataclass(frozen=True)
class Rung:
    """The image after `rung` chunks, with the file bytes needed to reach it."""

    rung: int
    pixels: np.ndarray  # (H, W, 3) uint8
    bytes: int  # bytes of the chunk that completes this rung (0 for rung 0)
    cum_bytes: int  # file bytes up to and including that chunk (header included)
    bpp: float  # cum_bytes * 8 / (H W)
    ideal_bits: float | None = None  # information content of that chunk (encoder side only)
    kl_bits: float | None = None  # KL(q || p) of that chunk's step (encoder side only; None for rungs 0 and T + 1)
    psnr: float | None = None  # against the original (encoder side only)


@dataclass
class EncodeResult:
    """The file and what it cost."""

    data: bytes
    rungs: list[Rung]
    ideal_bits: float  # information content of all chunks under the quantised tables
    nelbo_bits: float  # the negative ELBO of this image under the coded steps (float pmf, top KL included)
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
    return _pixels_uint8(to_pixel_units(x))


def _pixels_uint8(p: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in pixel units -> nearest pixels (H, W, 3) uint8."""
    return p.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()


def _shown(x: torch.Tensor, rung_filter: RungFilter | None) -> np.ndarray:
    """A rung's view x in [-1, 1] as pixels, through the file's filter of that rung when it has one."""
    if rung_filter is None:
        return _to_uint8(x)
    return _pixels_uint8(apply_filter(rung_filter, to_pixel_units(x.cpu())))


@dataclass(frozen=True)
class _View:
    """The encoder's denoise view of a rung (x_hat' in [-1, 1]) and, where it may send a filter, its statistics."""

    x: torch.Tensor
    stats: FilterStats | None


def _with_filters(header: Header, chunks: list[Chunk], views: list[_View], slope_db: float | None,
                  original: np.ndarray) -> tuple[list[Chunk], list[float]]:
    """The step chunks, each wrapped with its rung's filter where one pays for its bytes (rung_filter.fit_filter at
    `slope_db`, on what the file costs up to that rung and each later one), and the PSNR of every lossy rung as the
    decoder shows it."""
    cum_bytes = np.cumsum([len(write_stream(header, []))] + [CHUNK_FRAME_SIZE + len(c.payload) for c in chunks])[1:]
    out, psnrs = [], [psnr(_to_uint8(views[0].x), original)]
    for k, (chunk, view) in enumerate(zip(chunks, views[1:])):
        best = None if view.stats is None or slope_db is None else fit_filter(view.stats, 8.0 * cum_bytes[k:], slope_db)
        rung_filter = best[0] if best is not None else None
        if rung_filter is not None:
            wrapped = wrap_filtered(replace(chunk, check=rung_filter.checked(chunk.check)), pack_filter(rung_filter))
            cum_bytes[k:] += len(wrapped.payload) - len(chunk.payload)
            chunk = wrapped
        out.append(chunk)
        psnrs.append(psnr(_shown(view.x, rung_filter), original))
    return out, psnrs


def split_filters(chunks: list[Chunk], steps: int) -> tuple[list[Chunk], list[RungFilter | None]]:
    """The chunks as their coders wrote them, and each step chunk's rung filter (None where it has none); a filter
    beside the lossless chunk, or one that is not a filter, is refused (BitstreamError)."""
    inner, filters = [], []
    for i, chunk in enumerate(chunks):
        what = f"chunk {i}"
        chunk, data = unwrap_filtered(chunk, what)
        if data is not None and i >= steps:
            raise BitstreamError(f"{what}: the lossless chunk carries a rung filter, which it cannot: it is corrupt")
        inner.append(chunk)
        filters.append(None if data is None else unpack_filter(data, what))
    return inner, filters


class _Ladder:
    """The shared walk of encoder and decoder down t_0 = 1 > ... > t_T (the first T times of the model's grid)."""

    def __init__(self, loaded: LoadedModel, steps: int, seed: int, height: int, width: int, timer: Timer,
                 progress: Progress | None, version: int, total_calls: int) -> None:
        self.model: UQDM = loaded.model
        self.loaded = loaded
        self._refined: dict[bytes, torch.Tensor] = {}  # x_hat' at the current step, by the hash of its network
        self.device = next(self.model.parameters()).device
        self.seed, self.timer, self.progress = seed, timer, progress
        self.split = version >= SPLIT_SINCE  # the networks' tiling (tiling.regions)
        self.calls, self.total_calls = 0, total_calls  # network calls, for the progress callback
        self.shape = (1, 3, height, width)
        self.T = steps  # the first T steps of the model's grid, then p(x | z_T)
        self.gammas = self.model.gammas(steps).detach()
        self.i = 0
        self.z = rng.normal(seed, rng.TOP_NOISE, 0, self.shape, self.device)  # z_1 ~ N(0, I) from the seed
        self._predict()

    def _net(self, z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_hat, s_hat), bit-identical in encoder and decoder processes (see determinism.py)."""
        with torch.no_grad(), one_thread():
            return predict_tiled(self.model.predict, z, gamma, self.split)  # in halves or tiles

    def _predict(self) -> None:
        t = time.perf_counter()
        self.eps_hat, self.s_hat = self._net(self.z, self.gammas[self.i])
        self.timer.network += time.perf_counter() - t
        self.tick()

    def tick(self) -> None:
        """One more network call done (the U-Net's, or a pass of the pixel context network)."""
        self.calls += 1
        if self.progress:
            self.progress(self.calls, self.total_calls)

    def denoised(self) -> torch.Tensor:
        """x_hat = (z - sigma eps_hat) / alpha at the current step."""
        return denoise(self.z, self.eps_hat, self.gammas[self.i])

    def step_context(self, coder: StepCoder) -> StepContext:
        """Step i's prior p(z_s | z_t) (mu_p, sigma_p, delta) and what `coder` needs to draw shared randomness (the
        post-filter's x_hat' only for a grouped coder whose networks read it: a plain step never runs the filter)."""
        g_t, g_s = self.gammas[self.i], self.gammas[self.i + 1]
        mu_p, sigma_p = prior(self.z, self.eps_hat, self.s_hat, g_t, g_s)
        return StepContext(self.seed, self.i, self.z, g_t, g_s, mu_p, sigma_p, posterior_width(g_t, g_s),
                           self.timer.clock, self.denoised().clamp(-1, 1),
                           self.refined(self.loaded.post_filter(coder.refine_hash))
                           if isinstance(coder, GroupedCoder) and coder.refine_hash is not None else None,
                           self.split)

    def refined(self, post_filter: Refiners | None) -> torch.Tensor | None:
        """x_hat' of `post_filter` (the model's refine.pt for the reconstruction shown; a step context fit's own for
        its prior) at the current step, computed once per step and network (two fits sharing this rung's network
        share the pass); None where it has no network for this rung."""
        net = post_filter.nets.get(self.i) if post_filter is not None else None
        if net is None:
            return None
        key = post_filter.net_hashes[self.i]
        if key not in self._refined:
            t = time.perf_counter()
            with torch.no_grad(), one_thread():
                self._refined[key] = refine(net, self.denoised().clamp(-1, 1), self.z, self.s_hat, self.split)
            self.timer.network += time.perf_counter() - t
        return self._refined[key]

    def shown_later(self) -> Callable[[], torch.Tensor]:
        """The denoise view of the current step (x_hat' in [-1, 1]), as a function that may run later on another
        thread: a pass of the post-filter not already made at this step (by a step context reading the same network)
        runs there."""
        refiners = self.loaded.refiners
        net = refiners.nets.get(self.i) if refiners is not None else None
        if net is None or refiners.net_hashes[self.i] in self._refined:
            shown = self._denoised_view(())
            return lambda: shown
        inputs = (self.denoised().clamp(-1, 1), self.z, self.s_hat)  # advance() rebinds these, never writes them
        split = self.split

        def show() -> torch.Tensor:
            with torch.no_grad():
                return refine(net, *inputs, split)

        return show

    def advance(self, z_s: torch.Tensor) -> None:
        """Move to z_s, then the network at the next step."""
        self.z = z_s
        self.i += 1
        self._refined = {}
        self._predict()

    def pixel_model(self) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x | z_T) as flat (mean, scale) per sub-pixel in pixel units, on the model's device (the tables are
        built there)."""
        m, b = pixel_prior(self.z, self.eps_hat, self.s_hat, self.gammas[self.T])
        return m.reshape(-1).float(), b.reshape(-1).float()

    def chain_end(self) -> ChainEnd:
        """What the pixel context network starts from at z_T."""
        m, b = pixel_prior(self.z, self.eps_hat, self.s_hat, self.gammas[self.T])
        return ChainEnd(self.z, self.denoised().clamp(-1, 1), self.s_hat, m, b)

    def encode_pixels(self, pixels: torch.Tensor, context: PixelContext) -> tuple[Coded, float]:
        """context.encode_pixels at z_T, timed (the context network's time counts as network time)."""
        t = time.perf_counter()
        with torch.no_grad(), one_thread():
            coded, nelbo = encode_pixels(context, self.chain_end(), pixels, self.tick, self.split)
        self.timer.network += time.perf_counter() - t - sum(coded.clock.values())
        return coded, nelbo

    def decode_pixels(self, payload: bytes, context: PixelContext, with_scales: bool) -> np.ndarray:
        """context.decode_pixels at z_T, timed like `encode_pixels`."""
        t, before = time.perf_counter(), sum(self.timer.clock.values())
        with torch.no_grad(), one_thread():
            pixels = decode_pixels(context, self.chain_end(), payload, self.timer.clock, self.tick,
                                   with_scales=with_scales, split=self.split)
        self.timer.network += time.perf_counter() - t - (sum(self.timer.clock.values()) - before)
        return pixels

    def unrefined(self) -> np.ndarray:
        """The U-Net's x_hat at the current step as pixels: what the rung checks are made on (it verifies the
        decoded chain, and is the same with or without a post-filter)."""
        return _to_uint8(self.denoised().clamp(-1, 1))

    def _denoised_view(self, dims: tuple[int, ...]) -> torch.Tensor:
        """The denoise image (x_hat, refined by the model's post-filter for this rung when it has one) as the
        networks see z flipped along `dims`, flipped back."""
        refined = self.refined(self.loaded.refiners)
        if not dims:
            return self.denoised().clamp(-1, 1) if refined is None else refined
        t = time.perf_counter()
        z, gamma = self.z.flip(dims), self.gammas[self.i]
        eps_hat, s_hat = self._net(z, gamma)
        self.tick()
        x_hat = denoise(z, eps_hat, gamma).clamp(-1, 1)
        if refined is not None:
            with torch.no_grad(), one_thread():
                x_hat = refine(self.loaded.refiners.nets[self.i], x_hat, z, s_hat, self.split)
        self.timer.network += time.perf_counter() - t
        return x_hat.flip(dims)

    def reconstruct(self, recon: str, rung_filter: RungFilter | None = None) -> np.ndarray:
        """The image shown at the current step: denoise (x_hat, refined by the model's post-filter for this rung
        when it has one), ensemble (denoise averaged over the FLIPS of z), unrefined (x_hat), flow (DDIM to t = 0)
        or ancestral sampling; denoise and ensemble through the file's `rung_filter` of this rung, if any."""
        if recon == "ensemble":  # x_ens = mean_f f^-1(x_hat'(f z))
            return _shown(sum(self._denoised_view(dims) for dims in FLIPS) / len(FLIPS), rung_filter)
        if recon == "denoise":
            return _shown(self._denoised_view(()), rung_filter)
        if recon == "unrefined" or self.i == self.T:
            return self.unrefined()
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
                eps_hat, s_hat = self._net(z, g_s)
                self.tick()
            return _to_uint8(denoise(z, eps_hat, self.gammas[self.T]).clamp(-1, 1))


def _pixels_tensor(src: SourceImage, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(src.pixels.copy()).permute(2, 0, 1)[None].contiguous().to(device)


def encode_report(image: str | Path | Image.Image | np.ndarray, model: str | Path = DEFAULT_MODEL,
                  seed: int | None = None, device: str = "cpu", progress: Progress | None = None,
                  coder: str | None = None, rec_steps: int | None = None, posterior: str | None = None,
                  rec_bits: int | None = None, steps: int | None = None, *, overlap: bool = False,
                  context: bool = True) -> EncodeResult:
    """Encode an image into a diffcodec file and report every rung's bytes, bits, KL and PSNR (denoise).

    steps: code the first T of the model's steps, then the pixels under p(x | z_T) (default: the model's
    `default_steps`); the file holds T + 1 chunks. Fewer steps drop the top lossy rungs and can make the lossless
    rung smaller (late steps at high SNR cost more bits than they save: see weights/default/README.md).

    coder: "uq" (universal quantization), "rec" (shared-seed REC for every step) or "hybrid" (REC for the first
    `rec_steps` steps, default T // 2, then UQ); REC sends the `posterior` family ("uniform" or "gaussian") in
    chunks of about `rec_bits` bits. Each left None takes the model's default (its codec.json: the default model
    sends its first 4 steps as Gaussian REC steps, then UQ; `steps.Coding.override`). The decoder reads the choice
    from the file.

    context: code the pixels with the model's pixel context network (context.pt) when it has one for T steps
    (four checkerboard groups, each pixel's G given R and B given R and G: a smaller lossless rung, four more
    passes of a small network); False codes them factorised.

    overlap: range-code each UQ step's symbols on a worker thread while this thread runs the next network call
    (the same bytes; the timings then overlap, so the phases add up to more than "total"). The decoder cannot
    do this: its next network call needs the decoded symbols.
    """
    t_start = time.perf_counter()
    src = load_image(image)
    loaded = load_model(model, device)
    T = loaded.default_steps if steps is None else steps
    if not (isinstance(T, int) and 1 <= T <= loaded.model.steps):
        raise BadInputError(f"steps must be in [1, {loaded.model.steps}] for model {loaded.name!r}, got {T!r}")
    seed = secrets.randbits(63) if seed is None else int(seed)
    h, w = src.pixels.shape[:2]
    coders = grouped_coders(loaded.coding.for_steps(T).override(coder, rec_steps, posterior, rec_bits).coders(T),
                            loaded.step_nets if context else None)
    # validates every field before any work; the rung-0 check is known once the ladder has started
    header = Header(loaded.name, loaded.weights_hash, h, w, src.mode, src.palette, seed, T, 0, FORMAT_VERSION)
    pixel_context = loaded.context if context and loaded.context is not None and loaded.context.steps == T else None
    timer = Timer()
    # one torch thread for the whole encode, set before the worker starts: its own uses of one_thread are then
    # no-ops, and no thread restores the count while another computes (determinism.py)
    with one_thread(), (ThreadPoolExecutor(1) if overlap else nullcontext()) as pool, ThreadPoolExecutor(1) as shower:
        ladder = _Ladder(loaded, T, seed, h, w, timer, progress, header.version,
                         T + 1 + (len(GROUPS) if pixel_context else 0))
        pixels = _pixels_tensor(src, ladder.device)
        x = to_unit(pixels)
        header = replace(header, check=rung_check(ladder.unrefined().tobytes()))
        coded, coder_ids, checks, kls, shown = [], [], [], [], []
        slope_db = loaded.coding.filter_slope
        original = pixels.float().cpu()  # what the filter statistics compare each rung's view with

        def measure() -> None:  # the rung shown and its filter statistics, on `shower`: a post-filter pass the step
            show = ladder.shown_later()  # context did not make runs there, on the core the chain's calls leave idle
            filtered = slope_db is not None and ladder.i > 0

            def view() -> _View:
                x_shown = show()
                return _View(x_shown, filter_stats(to_pixel_units(x_shown.cpu()), original) if filtered else None)

            shown.append(shower.submit(view))

        for step_coder in coders:
            prior = ladder.step_context(step_coder)  # first: its post-filter pass may be the one shown
            measure()
            sent = step_coder.send(prior, x, pool)
            coded.append(sent.coded)
            coder_ids.append(sent.coder_id)
            kls.append(sent.kl_bits)
            ladder.advance(sent.z_s)
            checks.append(rung_check(ladder.unrefined().tobytes()))
        measure()
        nelbo = sum(kls)
        m, b_x = ladder.pixel_model()
        symbols = flat(pixels).long().numpy()
        last = start(pool, lambda: code_symbols(symbols, m, b_x, lo=0, hi=255))  # factorised
        pixel_nelbo = float(pixel_bits(pixels.reshape(-1), m, b_x).double().sum())
        discarded: dict[str, float] = {}  # the clock of the lossless chunk not kept
        if pixel_context is not None:
            with_context, context_nelbo = ladder.encode_pixels(pixels, pixel_context)
            # the smaller chunk is kept: the context never makes a file larger (e.g. a tiny image, where its
            # framing of 56 bytes costs more than it saves)
            if len(with_context.payload) < len(last.result().payload):
                discarded = last.result().clock
                last, pixel_nelbo = start(None, lambda: with_context), context_nelbo
            else:
                discarded, pixel_context = with_context.clock, None
        coded.append(last)
        nelbo += pixel_nelbo
        nelbo += float(top_bits(x, ladder.gammas[0]).double().sum())  # not sent: z_1 comes from the seed
        checks.append(rung_check(src.pixels.tobytes()))
        views = [f.result() for f in shown]
        done = [c.result() for c in coded]  # waits for the worker; raises what it raised
    for clock in [c.clock for c in done] + [discarded]:
        for phase, seconds in clock.items():
            timer.clock[phase] += seconds
    coder_ids.append(CODER_UQ if pixel_context is None else CODER_CONTEXT_SCALED)
    chunks = [Chunk(i, c.payload, check) for i, c, check in zip(coder_ids, done, checks)]
    steps_sent, psnrs = _with_filters(header, chunks[:T], views, slope_db, src.pixels)
    data = write_stream(header, steps_sent + chunks[T:])
    psnrs.append(math.inf)
    bits = [c.bits for c in done]
    kls = [None, *kls, None]
    rungs = [
        Rung(r.rung, r.pixels, r.bytes, r.cum_bytes, r.bpp, ideal_bits=bits[r.rung - 1] if r.rung else 0.0,
             kl_bits=kl, psnr=p)
        for r, p, kl in zip(rung_table(read_stream(data)), psnrs, kls)
    ]
    total = time.perf_counter() - t_start
    return EncodeResult(data, rungs, float(sum(bits)), nelbo, timer.as_dict(total))


def encode(image: str | Path | Image.Image | np.ndarray, model: str | Path = DEFAULT_MODEL,
           seed: int | None = None, device: str = "cpu", progress: Progress | None = None,
           coder: str | None = None, rec_steps: int | None = None, posterior: str | None = None,
           steps: int | None = None, *, overlap: bool = False, context: bool = True) -> bytes:
    """Encode an image (path, PIL image or uint8 array) into the bytes of a diffcodec file
    (coder, rec_steps, posterior, steps, overlap and context as in `encode_report`)."""
    return encode_report(image, model, seed, device, progress, coder, rec_steps, posterior, steps=steps,
                         overlap=overlap, context=context).data


def _verify(k: int, pixels: np.ndarray, expected: int, rung_filter: RungFilter | None = None) -> None:
    """Refuse rung k if its pixels (or its filter) differ from what the encoder saw there (its stored rung_check)."""
    check = rung_check(pixels.tobytes())
    if (check if rung_filter is None else rung_filter.checked(check)) != expected:
        verified = f"; rungs 0 to {k - 1} decoded correctly" if k else ""
        raise ReconstructionCheckError(
            f"rung {k} fails its reconstruction check: this decoder computes different pixels than the encoder "
            f"did (another CPU/GPU, thread count or torch version), so it cannot give the right image{verified}", rung=k
        )


def rung_table(stream: Stream) -> list[Rung]:
    """Bytes per rung from the parsed container (pixels left empty)."""
    h, w = stream.header.height, stream.header.width
    empty = np.zeros((0, 0, 3), np.uint8)
    rows = [Rung(0, empty, 0, stream.header_size, stream.header_size * 8 / (h * w))]
    for k, span in enumerate(stream.spans, start=1):
        rows.append(Rung(k, empty, span.size, span.end, span.end * 8 / (h * w)))
    return rows


def _stream_model(header: Header, model: str | Path | None, device: str) -> LoadedModel:
    """`model` if given; else the model named in the header if its weights match, else any installed model with
    the header's weights (a model retrained under the same name keeps its old files decodable)."""
    if model is not None:
        return load_model(model, device)
    try:
        named = load_model(header.model_name, device)
    except ModelError:
        named = None
    if named is not None and named.weights_hash == header.weights_hash:
        return named
    found = find_by_hash(header.weights_hash)
    return load_model(found if found is not None else header.model_name, device)


def open_stream(data: bytes, model: str | Path | None = None, device: str = "cpu", *,
                max_pixels: int = MAX_PIXELS) -> tuple[Stream, LoadedModel, list[RungFilter | None]]:
    """Parse a file and load the model it was coded with (checked by weights hash); refuse a header of more
    than `max_pixels` pixels before anything is allocated. The stream's chunks come as their coders wrote them,
    with each rung's filter beside them (`split_filters`)."""
    stream = read_stream(data)
    h, w = stream.header.height, stream.header.width
    if h * w > max_pixels:
        raise BitstreamError(
            f"the header claims a {w} x {h} image ({h * w} pixels), over the decoder's limit of {max_pixels}: "
            "if the file is genuine, raise the limit with --max-pixels (max_pixels= in Python)"
        )
    loaded = _stream_model(stream.header, model, device)
    if loaded.weights_hash != stream.header.weights_hash:
        raise ModelError(
            f"stream was coded with model {stream.header.model_name!r} (weights {stream.header.weights_hash.hex()}), "
            f"but {loaded.path} has weights {loaded.weights_hash.hex()}: pass the matching model with --model"
        )
    if stream.header.steps > loaded.model.steps:
        raise BitstreamError(
            f"corrupt header: it claims {stream.header.steps} steps, but its model {stream.header.model_name!r} "
            f"has {loaded.model.steps}"
        )
    chunks, filters = split_filters(stream.chunks, stream.header.steps)
    stream = replace(stream, chunks=chunks)
    for i, chunk in enumerate(stream.chunks):
        if i < stream.header.steps:
            receiver(part_coder(chunk.coder), i)  # raises for a coder that cannot send a step
        elif chunk.coder not in (CODER_UQ, *CONTEXT_CODERS):
            raise BitstreamError(f"chunk {i}: coder {CODERS.get(chunk.coder, chunk.coder)!r} cannot send the lossless chunk")
    return stream, loaded, filters


def _check_context(loaded: LoadedModel, payload: bytes, steps: int) -> PixelContext:
    """The model's pixel context fit (context.pt or an earlier one kept beside it) that coded this lossless chunk
    (the lossy rungs, up to `steps`, decode without it)."""
    wanted = payload[:HASH_SIZE]
    lossy = f"; the lossy rungs decode without it (--rung {steps})"
    fit = next((c for c in loaded.context_fits if c.weights_hash == wanted), None)
    if fit is not None:
        return fit
    if loaded.context is None:
        raise ModelError(f"the lossless chunk was coded with a pixel context network (weights {wanted.hex()}), but "
                         f"model {loaded.name!r} has none ({loaded.path.parent / CONTEXT_FILE} is missing){lossy}")
    raise ModelError(f"the lossless chunk was coded with pixel context weights {wanted.hex()}, but "
                     f"{loaded.path.parent / CONTEXT_FILE} has {loaded.context.weights_hash.hex()} and "
                     f"{earlier_fit_name(CONTEXT_FILE, wanted)} is not beside it{lossy}")


def _view_calls(recon: str, k: int, T: int) -> int:
    """U-Net calls that showing rung k (of T steps) as `recon` makes beyond the chain's own: the ensemble's other
    flips, or the steps flow and ancestral run from k to T."""
    if recon == "ensemble":
        return len(FLIPS) - 1
    return T - k if recon in ("flow", "ancestral") else 0


def iter_rungs(data: bytes, recon: str = "denoise", upto: int | None = None, model: str | Path | None = None,
               device: str = "cpu", progress: Progress | None = None, only_last: bool = False,
               timer: Timer | None = None, *, max_pixels: int = MAX_PIXELS) -> Iterator[Rung]:
    """Decode rung 0, 1, ... up to `upto` (default: every complete chunk present), yielding each as it is ready
    (only rung `upto` with `only_last`, which skips the other rungs' reconstructions); `timer`, if given,
    collects the seconds of network, tables and coder."""
    if recon not in RECONS:
        raise BadInputError(f"unknown reconstruction {recon!r}: choose one of {', '.join(RECONS)}")
    stream, loaded, filters = open_stream(data, model, device, max_pixels=max_pixels)
    table = rung_table(stream)
    last = len(stream.chunks) if upto is None else upto
    if not 0 <= last <= len(stream.chunks):
        raise BadInputError(f"rung {last} is not in this file: it holds rungs 0 to {len(stream.chunks)}")
    h, w = stream.header.height, stream.header.width
    T = stream.header.steps
    # each step's coder, refused before any work if it cannot be decoded (a grouped step without its network)
    step_coders = [grouped_receiver(c.coder, i, loaded.step_fits, c.payload)
                   for i, c in enumerate(stream.chunks[: min(last, T)])]
    pixel_context = None
    if last > T and stream.chunks[T].coder in CONTEXT_CODERS:  # refused before any work if it cannot be decoded
        pixel_context = _check_context(loaded, stream.chunks[T].payload, T)
    shown_rungs = ([last] if last <= T else []) if only_last else range(min(last, T) + 1)
    calls = min(last, T) + 1 + (len(GROUPS) if pixel_context else 0)  # the chain's U-Net calls, the context's passes
    calls += sum(_view_calls(recon, k, T) for k in shown_rungs)
    ladder = _Ladder(loaded, T, stream.header.seed, h, w, timer or Timer(), progress, stream.header.version, calls)
    checks = [stream.header.check] + [chunk.check for chunk in stream.chunks]

    def shown(k: int) -> np.ndarray | None:
        """Verify rung k's unrefined x_hat; return the asked-for reconstruction if rung k is yielded."""
        _verify(k, ladder.unrefined(), checks[k], filters[k - 1] if k else None)
        if only_last and k != last:
            return None
        return ladder.reconstruct(recon, filters[k - 1] if k else None)

    def rung(k: int, pixels: np.ndarray) -> Rung:
        r = table[k]
        return Rung(k, pixels, r.bytes, r.cum_bytes, r.bpp)

    pixels = shown(0)
    if pixels is not None:
        yield rung(0, pixels)
    for i, chunk in enumerate(stream.chunks[:last]):
        if i < ladder.T:
            ladder.advance(step_coders[i].receive(ladder.step_context(step_coders[i]), chunk.payload))
            pixels = shown(i + 1)
        elif pixel_context is not None:
            pixels = ladder.decode_pixels(chunk.payload, pixel_context, chunk.coder == CODER_CONTEXT_SCALED)
            _verify(i + 1, pixels, chunk.check)
        else:
            m, b = ladder.pixel_model()
            symbols = decode_symbols(chunk.payload, m, b, lo=0, hi=255, clock=ladder.timer.clock).astype(np.uint8)
            pixels = symbols.reshape(3, h, w).transpose(1, 2, 0).copy()
            _verify(i + 1, pixels, chunk.check)
        if pixels is not None:
            yield rung(i + 1, pixels)


def decode(data: bytes, rung: int | None = None, recon: str = "denoise", model: str | Path | None = None,
           device: str = "cpu", progress: Progress | None = None, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a diffcodec file to (H, W, 3) uint8 pixels at `rung` (default: the best rung present)."""
    last = None
    for last in iter_rungs(data, recon, rung, model, device, progress, only_last=True, max_pixels=max_pixels):
        pass
    assert last is not None
    return last.pixels


def decode_rungs(data: bytes, recon: str = "denoise", model: str | Path | None = None,
                 device: str = "cpu", progress: Progress | None = None, *, max_pixels: int = MAX_PIXELS) -> list[Rung]:
    """Every rung present in the file, with its pixels, bytes and bits per pixel."""
    return list(iter_rungs(data, recon, None, model, device, progress, max_pixels=max_pixels))


def decode_image(data: bytes, rung: int | None = None, recon: str = "denoise", model: str | Path | None = None,
                 device: str = "cpu", progress: Progress | None = None, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Like `decode`, as a PIL image in the original mode (exactly at the lossless rung)."""
    stream = read_stream(data)
    pixels = decode(data, rung, recon, model, device, progress, max_pixels=max_pixels)
    last = len(stream.chunks) if rung is None else rung
    exact = last == stream.header.steps + 1
    return to_pil(pixels, stream.header.mode, stream.header.palette, exact)
