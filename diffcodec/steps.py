"""The two ways to send one diffusion step z_t -> z_s, behind one interface: universal quantization ("uq",
DESIGN.md section 2) and shared-seed relative entropy coding ("rec", diffcodec/rec/, with a uniform or Gaussian
posterior). codec.py walks the ladder; a step coder only sends or receives one step given its `StepContext`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from diffcodec import rng
from diffcodec.bitstream import CODER_REC, CODER_REC_ESCAPE, CODER_REC_POWER, CODER_UQ, CODERS
from diffcodec.entropy import decode_symbols, encode_symbols
from diffcodec.entropy.coder import decode_symbols_from, encode_symbols_into
from diffcodec.errors import BadInputError, BitstreamError
from diffcodec.rec import FAMILIES, RecStep, StepPrior, decode_step, encode_step
from diffcodec.rec.coder import (MARGIN, MAX_ESCAPE, MAX_WIDENING, TARGET_BITS, PartReader, PartWriter, check_budget,
                                 check_escape, check_fraction, check_sharpen, with_skips, without_skips)
from diffcodec.uqdm import LN2, log_interval_mass, logistic_scale, posterior, step_bits

CODER_CHOICES = ("uq", "rec", "hybrid")


@dataclass(frozen=True)
class StepContext:
    """What encoder and decoder both hold at step `step` (t -> s): the prior and where to draw shared randomness."""

    seed: int
    step: int
    z_t: Tensor  # (1, 3, H, W)
    gamma_t: Tensor
    gamma_s: Tensor
    mu_p: Tensor  # (1, 3, H, W)
    sigma_p: Tensor  # (1, 3, H, W): std of the network's logistic g
    delta: Tensor  # scalar: width of the uniform posterior
    clock: dict[str, float]  # seconds per phase ("tables", "coder", "rec", "context"), added to by the coders
    x_hat: Tensor | None = None  # (1, 3, H, W): the U-Net's denoise(z_t) in [-1, 1], for a step context network
    x_refined: Tensor | None = None  # (1, 3, H, W): x_hat refined by the post-filter, for a step context network
    # trained on it (step_context.refined_inputs); None where the model's step context reads the U-Net's x_hat
    split: bool = True  # the networks' tiling (tiling.regions): False for format 2 files

    def flat_prior(self) -> StepPrior:
        """The prior as flat float64 CPU tensors, as REC takes it."""
        return StepPrior(_flat64(self.mu_p), _flat64(self.sigma_p), self.delta.detach().double().cpu())


class Coded(NamedTuple):
    """A chunk payload as the entropy coder made it."""

    payload: bytes
    bits: float  # information content of the payload
    clock: dict[str, float]  # seconds of the coding per phase ("tables", "coder"), for the caller to add up


def code_symbols(symbols: np.ndarray, mean: Tensor, scale: Tensor, lo: int | None = None,
                 hi: int | None = None) -> Coded:
    """`encode_symbols` with a clock of its own: safe to run on a worker thread while the caller's clock ticks."""
    clock: dict[str, float] = {}
    payload, bits = encode_symbols(symbols, mean, scale, lo, hi, clock=clock)
    return Coded(payload, bits, clock)


def start(pool: Executor | None, work: Callable[[], Coded]) -> Future[Coded]:
    """`work` on the pool's worker, or at once (an already finished future) without a pool."""
    if pool is not None:
        return pool.submit(work)
    done: Future[Coded] = Future()
    done.set_result(work())
    return done


@dataclass(frozen=True)
class SentStep:
    """One step as the encoder sent it."""

    coded: Future[Coded]  # the payload: finished, or still being range coded on the encoder's worker thread
    z_s: Tensor  # (1, 3, H, W): the decoder's z_s, bit-identical
    kl_bits: float  # the step's KL(q || p) in bits (for UQ: the Monte-Carlo KL at z_s, which is what UQ spends)
    coder_id: int  # the chunk's coder id (a grouped coder may send a small step plainly)


class StepCoder(Protocol):
    """Sends (encoder) or receives (decoder) one step; `coder_id` is the chunk's coder id in the container."""

    coder_id: int

    def send(self, ctx: StepContext, x: Tensor, pool: Executor | None = None) -> SentStep:
        """Code q(z_s | z_t, x) for data x in [-1, 1] (1, 3, H, W); z_s comes back at once, the payload may be
        coded on `pool`'s worker while the caller runs the next network call."""
        ...

    def receive(self, ctx: StepContext, payload: bytes) -> Tensor:
        """The decoder's z_s (1, 3, H, W) from the chunk payload."""
        ...


def flat(t: Tensor) -> Tensor:
    """t as a flat float32 CPU tensor."""
    return t.detach().reshape(-1).float().cpu()


def _flat64(t: Tensor) -> Tensor:
    return t.detach().reshape(-1).double().cpu()


def step_coding_model(u: Tensor, sigma_p: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """P(k | u) = G((k - u + 1/2) delta) - G((k - u - 1/2) delta): a discretized logistic in k
    of mean u and scale b / delta (b the logistic scale of sigma_p); returns flat float32 (mean, scale) on the
    model's device, where the tables are built (entropy.coder.table_builder)."""
    return u.reshape(-1).float(), (logistic_scale(sigma_p) / delta).reshape(-1).float()


def dither(ctx: StepContext) -> Tensor:
    """The step's shared dither u ~ U[-1/2, 1/2) (1, 3, H, W)."""
    return rng.dither(ctx.seed, ctx.step, tuple(ctx.z_t.shape), ctx.z_t.device)


def quantize(ctx: StepContext, mu_q: Tensor, u: Tensor) -> Tensor:
    """k = round((mu_q - mu_p) / delta + u)."""
    return torch.round((mu_q - ctx.mu_p) / ctx.delta + u)


def dequantize(ctx: StepContext, k: Tensor, u: Tensor) -> Tensor:
    """z_s = (k - u) delta + mu_p."""
    return (k - u) * ctx.delta + ctx.mu_p


def _coding_model_at(ctx: StepContext, u: Tensor, where: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(the flat mask of `where` (1, 3, H, W) on the tables' device, then `step_coding_model`'s mean and scale of
    those elements)."""
    mean, scale = step_coding_model(u, ctx.sigma_p, ctx.delta)
    rows = where.reshape(-1).to(mean.device)
    return rows, mean[rows], scale[rows]


class UQCoder:
    """Universal quantization: k = round((mu_q - mu_p) / delta + u), z_s = (k - u) delta + mu_p."""

    coder_id = CODER_UQ

    def send(self, ctx: StepContext, x: Tensor, pool: Executor | None = None) -> SentStep:
        """k and z_s at once; the range coding of k (which z_s does not depend on) runs on `pool` if given."""
        t = time.perf_counter()
        u = dither(ctx)
        k = quantize(ctx, posterior(ctx.z_t, x, ctx.gamma_t, ctx.gamma_s)[0], u)
        symbols, (mean, scale) = flat(k).long().numpy(), step_coding_model(u, ctx.sigma_p, ctx.delta)
        ctx.clock["tables"] += time.perf_counter() - t
        coded = start(pool, lambda: code_symbols(symbols, mean, scale))
        z_s = dequantize(ctx, k, u)
        kl = float(step_bits(z_s, ctx.mu_p, ctx.sigma_p, ctx.delta).double().sum())
        return SentStep(coded, z_s, kl, self.coder_id)

    def receive(self, ctx: StepContext, payload: bytes) -> Tensor:
        """z_s from the payload. No overlap is possible here: the next network call needs this z_s, and z_s needs
        the decoded symbols."""
        u = dither(ctx)
        k = decode_symbols(payload, *step_coding_model(u, ctx.sigma_p, ctx.delta), clock=ctx.clock)
        return dequantize(ctx, torch.from_numpy(k).to(ctx.z_t.device).reshape(ctx.z_t.shape).float(), u)


WIDENINGS_PER_OCTAVE = 4
"""A `rec-stream-wide` part codes its escaped elements' k under the step's discretized logistic with its scale times
2^(w / WIDENINGS_PER_OCTAVE), w in [0, MAX_WIDENING] sent with the part: they are skipped where the prior is far too
sure, so at w = 0 they cost about twice their Gaussian KL (kodim23: 7,572 bits for 3,639 bits of KL; 3,848 widened)."""


def widened(scale: Tensor, widening: int | Tensor) -> Tensor:
    """b' = b 2^(w / WIDENINGS_PER_OCTAVE): the escapes' logistic scale (in units of delta) widened by w."""
    return scale * 2.0 ** (widening / WIDENINGS_PER_OCTAVE)


def best_widening(symbols: np.ndarray, mean: Tensor, scale: Tensor) -> int:
    """The w in [0, MAX_WIDENING] under which the symbols k (n,) cost the fewest bits: the sum over them of
    -log2 P(k | u, b'), P(k | u, b') = G((k - u + 1/2) / b') - G((k - u - 1/2) / b') (u = mean, b = scale)."""
    w = torch.arange(MAX_WIDENING + 1, dtype=torch.float64)[:, None]
    v = torch.from_numpy(symbols).double()[None] - mean.double().cpu()[None]
    info = -log_interval_mass(v, torch.tensor(0.5, dtype=torch.float64), widened(scale.double().cpu(), w))
    return int(torch.argmin(info.sum(1) / LN2))


class _Escapes(NamedTuple):
    """The UQ symbols k of a REC step's skipped elements and their discretized logistic (flat, in element order)."""

    symbols: np.ndarray
    mean: Tensor
    scale: Tensor


class RecCoder:
    """Chunked shared-seed REC of the uniform or the Gaussian posterior (the family travels in the payload). It
    writes the `rec-power` layout (indices under a power pmf fitted per step), or with `escape` the `rec-escape`
    layout: the chunks rec.coder.out_of_reach at that factor go by UQ (their elements' k under the step's
    discretized logistic, the dither of `uq`), the rest by REC. `power=False` reads the first `rec` layout."""

    def __init__(self, family: str = "uniform", target_bits: int = TARGET_BITS, margin: int = MARGIN,
                 power: bool = True, fraction: float = 1.0, sharpen: float = 1.0, escape: float | None = None) -> None:
        self.family, self.target_bits, self.margin, self.power = family, target_bits, margin, power
        self.fraction = fraction  # encoder only: rec.encode_step's share of the KL the chunks are planned for
        self.sharpen = sharpen  # encoder only: rec.encode_step's beta of the pick
        self.escape = escape  # the factor of out_of_reach (encoder); not None: the rec-escape layout (both sides)
        self.coder_id = CODER_REC_ESCAPE if escape is not None else CODER_REC_POWER if power else CODER_REC

    def _search(self, ctx: StepContext, x: Tensor) -> tuple[RecStep, Tensor, _Escapes | None, float]:
        """(the REC step, the decoder's z_s (1, 3, H, W), the UQ symbols and coding model of the skipped chunks'
        elements or None, the step's KL in bits)."""
        mu_q = posterior(ctx.z_t, x, ctx.gamma_t, ctx.gamma_s)[0]
        sent = encode_step(self.family, ctx.seed, ctx.step, ctx.flat_prior(), _flat64(mu_q), self.target_bits,
                           self.margin, ctx.z_t.device, self.power, self.fraction, sharpen=self.sharpen,
                           escape=self.escape)
        z_s = sent.z_s.float().reshape(ctx.z_t.shape).to(ctx.z_t.device)
        if not len(sent.skipped):
            return sent, z_s, None, sent.kl_bits
        escaped = torch.isnan(z_s)
        u = dither(ctx)
        k = quantize(ctx, mu_q, u)
        z_uq = dequantize(ctx, k, u)
        rows, mean, scale = _coding_model_at(ctx, u, escaped)
        kl_uq = step_bits(z_uq[escaped], ctx.mu_p[escaped], ctx.sigma_p[escaped], ctx.delta).double().sum()
        escapes = _Escapes(flat(k).long().numpy()[rows.cpu().numpy()], mean, scale)
        return sent, torch.where(escaped, z_uq, z_s), escapes, sent.kl_bits + float(kl_uq)

    def send(self, ctx: StepContext, x: Tensor, pool: Executor | None = None) -> SentStep:
        """Serial whatever `pool`: the payload is the index of the candidate that is z_s, found by the search (and
        the UQ symbols of the chunks it skipped)."""
        t = time.perf_counter()
        sent, z_s, escapes, kl = self._search(ctx, x)
        payload, bits = sent.payload, sent.bits
        if escapes is not None:
            uq = code_symbols(escapes.symbols, escapes.mean, escapes.scale)
            payload = with_skips(sent.payload, self.power, sent.skipped, uq.payload)
            bits += uq.bits + 8 * (len(payload) - len(sent.payload) - len(uq.payload))  # + the head's bytes
        ctx.clock["rec"] = ctx.clock.get("rec", 0.0) + time.perf_counter() - t
        return SentStep(start(None, lambda: Coded(payload, bits, {})), z_s, kl, self.coder_id)

    def send_into(self, ctx: StepContext, x: Tensor, writer: PartWriter) -> tuple[Tensor, float, float]:
        """`send` as one part of a chunk whose parts share `writer`'s range coder (the skipped chunks' elements coded
        right after the part's indices): (z_s, the bits it wrote, the KL in bits)."""
        t = time.perf_counter()
        sent, z_s, escapes, kl = self._search(ctx, x)
        widening = (best_widening(escapes.symbols, escapes.mean, escapes.scale)
                    if escapes is not None and writer.wide else 0)
        bits = writer.write(sent, widening)
        if escapes is not None:
            bits += encode_symbols_into(writer.encoder, escapes.symbols, escapes.mean, widened(escapes.scale, widening))
        ctx.clock["rec"] = ctx.clock.get("rec", 0.0) + time.perf_counter() - t
        return z_s, bits, kl

    def _with_escapes(self, ctx: StepContext, z_s: Tensor, skipped: np.ndarray | None,
                      decode: Callable[[Tensor, Tensor], np.ndarray]) -> Tensor:
        """z_s (n,) float64 from REC, NaN in the `skipped` chunks, as (1, 3, H, W) with those elements' k from
        `decode(mean, scale)` under their discretized logistic."""
        z_s = z_s.float().reshape(ctx.z_t.shape).to(ctx.z_t.device)
        if skipped is None or not len(skipped):
            return z_s
        escaped = torch.isnan(z_s)
        u = dither(ctx)
        rows, mean, scale = _coding_model_at(ctx, u, escaped)
        k = torch.zeros(rows.shape, dtype=torch.float32)
        k[rows.cpu()] = torch.from_numpy(decode(mean, scale)).float()
        return torch.where(escaped, dequantize(ctx, k.reshape(ctx.z_t.shape).to(ctx.z_t.device), u), z_s)

    def receive(self, ctx: StepContext, payload: bytes) -> Tensor:
        t = time.perf_counter()
        skipped, uq, payload = without_skips(payload, self.power) if self.escape is not None else (None, b"", payload)
        z_s = decode_step(payload, ctx.seed, ctx.step, ctx.flat_prior(), self.power, skipped)
        z_s = self._with_escapes(ctx, z_s, skipped,
                                 lambda mean, scale: decode_symbols(uq, mean, scale, clock=ctx.clock))
        ctx.clock["rec"] = ctx.clock.get("rec", 0.0) + time.perf_counter() - t
        return z_s

    def receive_from(self, ctx: StepContext, reader: PartReader) -> Tensor:
        """`receive` of one part of a chunk whose parts share `reader`'s range coder."""
        t = time.perf_counter()
        z_s, skipped, widening = reader.read(ctx.seed, ctx.step, ctx.flat_prior())
        z_s = self._with_escapes(ctx, z_s, skipped, lambda mean, scale: decode_symbols_from(
            reader.decoder, mean, widened(scale, widening), clock=ctx.clock, window_scales=reader.window_scales))
        ctx.clock["rec"] = ctx.clock.get("rec", 0.0) + time.perf_counter() - t
        return z_s


@dataclass(frozen=True)
class Coding:
    """How an encoder sends a file's steps: `coder` "uq", "rec" or "hybrid" (REC for the first `rec_steps`, default
    T // 2, then UQ); REC sends the `posterior` family in chunks of about `rec_bits` bits with 2^(bits + `rec_margin`)
    candidates each (one margin for every REC step, or a list: step i takes entry min(i, len - 1)), planned for
    `rec_fraction` of the step's KL and picked with sharpening `rec_sharpen` (rec.encode_step), the chunks out of
    reach at `rec_escape` (rec.coder.out_of_reach) sent by UQ where it is not None (RecCoder). Where `filter_slope`
    is not None the encoder sends a lossy rung's filter when its PSNR gain pays for its bytes at that many dB per
    doubling of the rate (rung_filter.fit_filter). A model's codec.json may hold these as its defaults; a file records
    its choice per chunk."""

    coder: str = "uq"
    rec_steps: int | None = None
    posterior: str = "uniform"
    rec_bits: int = TARGET_BITS
    rec_margin: int | tuple[int, ...] = MARGIN
    rec_fraction: float = 1.0
    rec_sharpen: float = 1.0
    rec_escape: float | None = None
    filter_slope: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rec_margin, list):  # as codec.json gives it
            object.__setattr__(self, "rec_margin", tuple(self.rec_margin))
        slope = self.filter_slope
        if slope is not None and (isinstance(slope, bool) or not isinstance(slope, (int, float)) or slope <= 0):
            raise BadInputError(f"filter_slope must be a number of dB above 0 (or absent), got {self.filter_slope!r}")

    def override(self, coder: str | None = None, rec_steps: int | None = None, posterior: str | None = None,
                 rec_bits: int | None = None) -> "Coding":
        """This coding with the caller's choices. A caller who names the coder gets the built-in rec_steps and
        posterior unless named too; rec_bits, rec_margin, rec_fraction, rec_sharpen, rec_escape and filter_slope stay
        this coding's unless named."""
        base = self if coder is None else replace(Coding(coder), rec_bits=self.rec_bits, rec_margin=self.rec_margin,
                                                  rec_fraction=self.rec_fraction, rec_sharpen=self.rec_sharpen,
                                                  rec_escape=self.rec_escape, filter_slope=self.filter_slope)
        return replace(base, rec_steps=base.rec_steps if rec_steps is None else rec_steps,
                       posterior=base.posterior if posterior is None else posterior,
                       rec_bits=base.rec_bits if rec_bits is None else rec_bits)

    def for_steps(self, steps: int) -> "Coding":
        """This coding (a model's default) for a file of `steps` steps: a rec_steps beyond them sends them all by REC
        (a caller's own rec_steps, given through `override` after this, is still checked)."""
        return self if self.rec_steps is None else replace(self, rec_steps=min(self.rec_steps, steps))

    def coders(self, steps: int) -> list[StepCoder]:
        """The coder of each of the T steps (BadInputError for a choice that makes no sense)."""
        return step_coders(steps, self.coder, self.rec_steps, self.posterior, self.rec_bits, self.rec_margin,
                           self.rec_fraction, self.rec_sharpen, self.rec_escape)


def step_coders(steps: int, coder: str = "uq", rec_steps: int | None = None, posterior_family: str = "uniform",
                rec_bits: int = TARGET_BITS, rec_margin: int | tuple[int, ...] = MARGIN, rec_fraction: float = 1.0,
                rec_sharpen: float = 1.0, rec_escape: float | None = None) -> list[StepCoder]:
    """The coder of each of the T steps: all "uq", all "rec", or "hybrid" (the first `rec_steps` by REC, default
    T // 2, the rest by UQ). REC sends `posterior_family` ("uniform" or "gaussian") in chunks of ~`rec_bits` bits,
    2^(bits + margin) candidates a chunk (`rec_margin`: one margin, or one per step, the last for the steps after
    it), planned for `rec_fraction` of the step's KL, picked with sharpening
    `rec_sharpen` (rec.encode_step), the chunks out of reach at `rec_escape` by UQ unless it is None (RecCoder)."""
    if coder not in CODER_CHOICES:
        raise BadInputError(f"unknown coder {coder!r}: choose one of {', '.join(CODER_CHOICES)}")
    if posterior_family not in FAMILIES:
        raise BadInputError(f"unknown posterior {posterior_family!r}: choose one of {', '.join(FAMILIES)}")
    if rec_steps is not None and coder != "hybrid":
        raise BadInputError("rec_steps (--rec-steps) only applies to the hybrid coder (--coder hybrid)")
    if rec_steps is not None and not 0 <= rec_steps <= steps:
        raise BadInputError(f"rec_steps must be in [0, {steps}] for a model of {steps} steps, got {rec_steps}")
    if posterior_family != "uniform" and coder == "uq":
        raise BadInputError("a Gaussian posterior needs REC: pass --coder rec or --coder hybrid")
    margins = step_margins(rec_margin, steps)
    for margin in set(margins):
        check_budget(rec_bits, margin)
    check_fraction(rec_fraction)
    check_sharpen(rec_sharpen)
    check_escape(rec_escape)
    n_rec = {"uq": 0, "rec": steps, "hybrid": steps // 2 if rec_steps is None else rec_steps}[coder]
    rec = {m: RecCoder(posterior_family, rec_bits, m, fraction=rec_fraction, sharpen=rec_sharpen, escape=rec_escape)
           for m in set(margins)}
    return [rec[margins[i]] if i < n_rec else UQCoder() for i in range(steps)]


def step_margins(rec_margin: int | tuple[int, ...], steps: int) -> list[int]:
    """The REC margin of each of the T steps: one margin for all, or one per step with the last repeated (BadInputError
    for an empty list or one that is not all integers; the range is `check_budget`'s, in `step_coders`)."""
    margins = [rec_margin] if isinstance(rec_margin, int) else list(rec_margin)
    if not margins or not all(isinstance(m, int) and not isinstance(m, bool) for m in margins):
        raise BadInputError(f"rec_margin is an integer or a non-empty list of integers, got {rec_margin!r}")
    return [margins[min(i, len(margins) - 1)] for i in range(steps)]


def receiver(coder_id: int, chunk: int) -> StepCoder:
    """The coder that reads a step chunk of this coder id."""
    if coder_id == CODER_UQ:
        return UQCoder()
    if coder_id in (CODER_REC, CODER_REC_POWER):
        return RecCoder(power=coder_id == CODER_REC_POWER)
    if coder_id == CODER_REC_ESCAPE:
        return RecCoder(escape=MAX_ESCAPE)  # the decoder reads the skipped chunks; the factor was the encoder's
    raise BitstreamError(f"chunk {chunk}: coder {CODERS.get(coder_id, coder_id)!r} cannot send a diffusion step")
