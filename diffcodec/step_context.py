"""The step context: a diffusion step's z_s sent in four checkerboard groups, each group's prior refined by the groups
already sent (DESIGN.md section 6, carried from the pixels to the steps).

For group g of step i (t -> s), the step's context network (nn/context.py; one network per step) sees the U-Net's
x_hat (or, for networks fitted on it, x_hat' of the post-filter refine.py, with the prior mean it implies,
mu_p = mu_q(z_t, x_hat')) and z_t, log(sigma_p / delta), the residuals (z_s - mu_p) / delta of groups < g (zero elsewhere) and the two
masks, and refines the network's prior p(z_s | z_t) of (mu_p, sigma_p):

    mu' = mu_p + MEAN_STEP delta dmu,  sigma' = sigma_p exp(dlog_sigma),  kappa = tanh(raw)
    mu'_G <- mu'_G + kappa_1 (z_R - mu'_R),  mu'_B <- mu'_B + kappa_2 (z_R - mu'_R) + kappa_3 (z_G - mu'_G)

Each of the 12 parts (group 0 R, G, B, group 1 R, G, B, ...) is then sent by the step's own coder (UQ or REC) under
(mu', sigma') with a randomness stream of its own (rng.part_step), so within a pixel G is sent given R, and B given
R and G. An untrained network (last layer zero, kappa 0) is exactly the plain prior.

Chunk payload: the hash of the step context file, then the parts in order. What encoders write: for REC parts the
`rec-stream-wide` layout (a 4-byte hash, then the parts in one range coder: rec.coder.PartWriter), for UQ parts the
packed layout `uq-packed` (the 8-byte hash, then per part a LEB128 length and the part's `uq` payload). Still read:
`rec-stream` (as `rec-stream-wide` without the widening of the escaped elements' prior; steps.RecCoder), the packed REC
layouts `rec-packed` and `rec-escape-packed` (every REC part after the first without the two prefix bytes
all parts of a step share, target bits and margin) and the first layout (`uq-grouped`, `rec-grouped`,
`rec-escape-grouped`: u32le lengths, whole parts).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from . import rng
from .bitstream import (CODER_REC_ESCAPE, CODER_REC_ESCAPE_GROUPED, CODER_REC_ESCAPE_PACKED, CODER_REC_GROUPED,
                        CODER_REC_PACKED, CODER_REC_POWER, CODER_REC_STREAM, CODER_REC_STREAM_WIDE, CODER_UQ,
                        CODER_UQ_GROUPED, CODER_UQ_PACKED, pack_varints, read_varint)
from .context import (GROUPS, channel_means, context_features, earlier_fit_name, group_mask, read_file,
                      write_file)
from .determinism import one_thread
from .errors import BitstreamError, ModelError
from .nn.context import ContextNet, from_entry, to_entry
from .rec.coder import PartReader, PartWriter
from .rec.family import kl_bits
from .steps import Coded, RecCoder, SentStep, StepCoder, StepContext, receiver, start
from .tiling import run_tiled
from .uqdm import posterior

STEP_CONTEXT_FILE = "step_context.pt"  # beside a model file: its step context networks
MEAN_STEP = 0.5  # units of delta per unit of the network's mean output
HASH_SIZE = 8
STREAM_HASH_SIZE = 4  # a `rec-stream` chunk names its step context fit by the first 4 bytes of its hash
PARTS = 3 * len(GROUPS)  # (group, channel) parts of a grouped step, in coding order
MIN_STEP_BITS = 1024
"""The encoder groups a step only when its Gaussian KL under the plain prior is at least this: the framing of a
grouped step (about 45 bytes with REC parts in one range coder, their heads about 23 bits each; about 30 with UQ
parts in the packed layout) would eat what the context saves (a fifth to a half of the step) on a smaller one.
Chosen on 16 held-out photos (BD-PSNR against JPEG 2000 +0.003 / +0.146 / +0.212 / +0.202 / +0.202 dB at 4096 /
2048 / 1024 / 384 / 0 bits); 4096 was the rule of the packed layout, whose REC framing was about 110 bytes a step."""
STREAMS = (CODER_REC_STREAM, CODER_REC_STREAM_WIDE)
"""Grouped chunks whose REC parts share one range coder: `rec-stream` (read only) and `rec-stream-wide`, whose parts
also send how much wider the prior of their escaped elements is (steps.RecCoder)."""
WRITTEN = {CODER_UQ: CODER_UQ_PACKED, CODER_REC_POWER: CODER_REC_STREAM_WIDE, CODER_REC_ESCAPE: CODER_REC_STREAM_WIDE}
"""Coder id of a step's parts -> coder id of the grouped chunk the encoder writes."""
PACKED = {CODER_UQ: CODER_UQ_PACKED, CODER_REC_POWER: CODER_REC_PACKED, CODER_REC_ESCAPE: CODER_REC_ESCAPE_PACKED}
"""The same in the packed layout (LEB128 lengths, REC parts sharing their prefix bytes), which the decoder reads."""
GROUPED = {CODER_UQ: CODER_UQ_GROUPED, CODER_REC_POWER: CODER_REC_GROUPED, CODER_REC_ESCAPE: CODER_REC_ESCAPE_GROUPED}
"""The same in the first layout (u32 lengths, whole parts), which the decoder still reads."""
_PART_CODER = {grouped: part for layout in (PACKED, GROUPED) for part, grouped in layout.items()} | {
    stream: CODER_REC_ESCAPE for stream in STREAMS}  # their parts may skip chunks
_LENGTH = struct.Struct("<I")  # a part's length in the first layout
_SHARED = slice(1, 3)  # the bytes of a REC part's prefix that every part of a step shares: target bits, margin


@dataclass(frozen=True)
class StepNets:
    """The step context networks of one model: one per step index i (the step from t_i), for the steps it has."""

    nets: dict[int, ContextNet]
    model_hash: bytes  # weights hash of the UQDM they were trained on
    weights_hash: bytes  # first 8 bytes of sha256(step context file), written at the start of every grouped chunk
    refine_hash: bytes | None = None  # weights hash of the post-filter whose x_hat' they read (refined_inputs) at
    # every step from a rung it refines; None: they read the U-Net's x_hat


def save_step_nets(path: Path, nets: dict[int, ContextNet], model_hash: bytes, refine_hash: bytes | None = None) -> None:
    """Write a step context file (per step: config and float32 weights; the model's hash; the post-filter's hash if
    the networks read its x_hat'), atomically."""
    blob = {"nets": {str(i): to_entry(net) for i, net in nets.items()}, "model_hash": model_hash.hex()}
    if refine_hash is not None:
        blob["refine_hash"] = refine_hash.hex()
    write_file(path, blob)


def load_step_nets(path: Path, weights_hash: bytes, device: str | torch.device = "cpu") -> StepNets:
    """Read a step context file written by `save_step_nets`; `weights_hash` is the file's (zoo.weights_hash)."""
    def parse(blob: dict) -> StepNets:
        nets = {int(i): from_entry(entry).to(device).eval().requires_grad_(False) for i, entry in blob["nets"].items()}
        refine = blob.get("refine_hash")
        return StepNets(nets, bytes.fromhex(blob["model_hash"]), weights_hash,
                        None if refine is None else bytes.fromhex(refine))

    return read_file(path, "step context", parse)


def refined_inputs(ctx: StepContext) -> StepContext:
    """The step as a network fitted on the post-filter sees it: x_hat' for x_hat, and the prior mean it implies,
    mu_p = mu_q(z_t, x_hat') (uqdm.posterior; the U-Net's own mu_p is mu_q at its x_hat); ctx itself where it
    carries no x_hat'."""
    if ctx.x_refined is None:
        return ctx
    return replace(ctx, x_hat=ctx.x_refined, mu_p=posterior(ctx.z_t, ctx.x_refined, ctx.gamma_t, ctx.gamma_s)[0])


def group_prior(net: ContextNet, ctx: StepContext, z_s: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mu', sigma', kappa), (B, 3, H, W) each, of group g given `z_s` (B, 3, H, W), of which only the entries of
    groups < g are read."""
    residual = (z_s - ctx.mu_p) / ctx.delta
    log_ratio = (ctx.sigma_p / ctx.delta).log()
    out = run_tiled(net, context_features(ctx.x_hat, ctx.z_t, log_ratio, residual, g), ctx.split)
    mu = ctx.mu_p + MEAN_STEP * ctx.delta * out[:, 0:3]  # mu' = mu_p + MEAN_STEP delta dmu
    sigma = ctx.sigma_p * torch.exp(out[:, 3:6])  # sigma' = sigma_p exp(dlog_sigma)
    return mu, sigma, torch.tanh(out[:, 6:9])


def _part(t: Tensor, mask: Tensor, c: int) -> Tensor:
    """Channel c of the masked pixels of (1, 3, H, W) as (1, 1, 1, n), row-major."""
    return t[0, c][mask].reshape(1, 1, 1, -1)


def _pack(parts: list[bytes]) -> bytes:
    """The parts of a packed chunk of UQ parts: each a LEB128 length and its payload."""
    return b"".join(pack_varints([len(payload)]) + payload for payload in parts)


def hash_size(coder_id: int) -> int:
    """Bytes of the step context hash at the start of a grouped chunk of this coder id."""
    return STREAM_HASH_SIZE if coder_id in STREAMS else HASH_SIZE


class _PartReader:
    """The parts of a grouped chunk's payload, one after the other (BitstreamError where it is cut or malformed)."""

    def __init__(self, payload: bytes, packed: bool, shares: bool) -> None:
        self.payload, self.packed, self.shares, self.pos, self.shared = payload, packed, shares, HASH_SIZE, b""

    def next(self, part: int) -> bytes:
        """Part `part`'s payload as its coder wrote it."""
        if self.packed:
            n, start_at = read_varint(self.payload, self.pos, f"the length of part {part} of a grouped step chunk")
        elif self.pos + _LENGTH.size > len(self.payload):
            raise BitstreamError(f"the grouped step chunk ends before part {part}: it is corrupt")
        else:
            (n,), start_at = _LENGTH.unpack_from(self.payload, self.pos), self.pos + _LENGTH.size
        self.pos = start_at + n
        if self.pos > len(self.payload):
            raise BitstreamError(f"the grouped step chunk ends inside part {part}: it is corrupt")
        data = self.payload[start_at : self.pos]
        if not (self.packed and self.shares):
            return data
        if part == 0:
            if len(data) < _SHARED.stop:
                raise BitstreamError("the first part of a grouped REC step is too short for its prefix: it is corrupt")
            self.shared = data[_SHARED]
            return data
        if len(data) < _SHARED.start:
            raise BitstreamError(f"part {part} of a grouped REC step is empty: it is corrupt")
        return data[: _SHARED.start] + self.shared + data[_SHARED.start :]

    def finish(self) -> None:
        """BitstreamError if bytes follow the last part."""
        if self.pos != len(self.payload):
            raise BitstreamError(f"the grouped step chunk has {len(self.payload) - self.pos} bytes after its last "
                                 "part: it is corrupt")


class GroupedCoder:
    """A step sent in PARTS parts under its step context network, each part by `inner` (UQ or REC). `send` writes
    WRITTEN's layout (`rec-stream-wide` for REC parts, `uq-packed` for UQ parts); `receive` reads the layout of the
    chunk coder id `layout` (default: the one `send` writes)."""

    def __init__(self, inner: StepCoder, fit: StepNets, step: int, layout: int | None = None) -> None:
        if inner.coder_id not in GROUPED:
            raise ValueError(f"coder id {inner.coder_id} has no grouped form")
        self.inner, self.net, self.weights_hash = inner, fit.nets[step], fit.weights_hash
        self.refine_hash = fit.refine_hash  # the post-filter whose x_hat' the network reads (None: the U-Net's x_hat)
        self.coder_id = WRITTEN[inner.coder_id]
        self.layout = self.coder_id if layout is None else layout

    def _walk(self, ctx: StepContext, send_part: Callable[[int, StepContext, Tensor], Tensor]) -> Tensor:
        """z_s (1, 3, H, W), part by part: `send_part(part, part_ctx, mask)` returns the part's z_s (1, 1, 1, n)."""
        ctx = refined_inputs(ctx)
        h, w = ctx.z_t.shape[-2:]
        z_s = torch.zeros_like(ctx.z_t)
        part = 0
        for g in range(len(GROUPS)):
            t = time.perf_counter()
            with torch.no_grad(), one_thread():
                mu, sigma, kappa = group_prior(self.net, ctx, z_s, g)
            ctx.clock["context"] = ctx.clock.get("context", 0.0) + time.perf_counter() - t
            mask = group_mask(g, h, w, ctx.z_t.device)
            mu, kappa = mu[0][:, mask], kappa[0][:, mask]  # (3, n): the group's sub-pixels
            for c in range(3):
                mean = channel_means(mu, kappa, z_s[0][:, mask])[c]  # mu'_c reads the channels before c, in z_s
                part_ctx = replace(ctx, step=rng.part_step(ctx.step, part), z_t=_part(ctx.z_t, mask, c),
                                   mu_p=mean.reshape(1, 1, 1, -1), sigma_p=_part(sigma, mask, c), x_hat=None,
                                   x_refined=None)
                z_s[0, c][mask] = send_part(part, part_ctx, mask).reshape(-1)
                part += 1
        return z_s

    def send(self, ctx: StepContext, x: Tensor, pool: Executor | None = None) -> SentStep:
        """The parts in order (REC parts into one range coder, UQ parts each finished before the next starts); a step
        of Gaussian KL under MIN_STEP_BITS goes to `inner` whole."""
        mu_q = posterior(ctx.z_t, x, ctx.gamma_t, ctx.gamma_s)[0].reshape(-1).double().cpu()
        if float(kl_bits("gaussian", ctx.flat_prior(), mu_q).sum()) < MIN_STEP_BITS:
            return self.inner.send(ctx, x, pool)
        if isinstance(self.inner, RecCoder):
            coded, kl, z_s = self._send_stream(self.inner, ctx, x)
        else:
            coded, kl, z_s = self._send_packed(ctx, x)
        return SentStep(start(None, lambda: coded), z_s, kl, self.coder_id)

    def _send_stream(self, inner: RecCoder, ctx: StepContext, x: Tensor) -> tuple[Coded, float, Tensor]:
        """(the `rec-stream-wide` payload, the KL in bits, z_s)."""
        writer, bits, kl = PartWriter(wide=True), 0.0, 0.0

        def send_part(part: int, part_ctx: StepContext, mask: Tensor) -> Tensor:
            nonlocal bits, kl
            z_part, part_bits, part_kl = inner.send_into(part_ctx, _part(x, mask, part % 3), writer)
            bits, kl = bits + part_bits, kl + part_kl
            return z_part

        z_s = self._walk(ctx, send_part)
        body = writer.finish()
        framing = STREAM_HASH_SIZE + PartWriter.PREFIX_SIZE  # the range coder's flush is not information
        return Coded(self.weights_hash[:STREAM_HASH_SIZE] + body, bits + 8.0 * framing, {}), kl, z_s

    def _send_packed(self, ctx: StepContext, x: Tensor) -> tuple[Coded, float, Tensor]:
        """(the `uq-packed` payload, the KL in bits, z_s)."""
        payloads, bits, kl, clock = [], 0.0, 0.0, {}

        def send_part(part: int, part_ctx: StepContext, mask: Tensor) -> Tensor:
            nonlocal bits, kl
            sent = self.inner.send(part_ctx, _part(x, mask, part % 3))
            coded = sent.coded.result()
            payloads.append(coded.payload)
            bits, kl = bits + coded.bits, kl + sent.kl_bits
            for phase, seconds in coded.clock.items():
                clock[phase] = clock.get(phase, 0.0) + seconds
            return sent.z_s

        z_s = self._walk(ctx, send_part)
        body = _pack(payloads)
        bits += 8.0 * (HASH_SIZE + len(body) - sum(map(len, payloads)))  # the framing
        return Coded(self.weights_hash + body, bits, clock), kl, z_s

    def receive(self, ctx: StepContext, payload: bytes) -> Tensor:
        """z_s from a grouped chunk (BitstreamError if it is cut or has bytes after its last part)."""
        if self.layout in STREAMS:
            reader = PartReader(payload[STREAM_HASH_SIZE:], wide=self.layout == CODER_REC_STREAM_WIDE)
            inner = self.inner
            if not isinstance(inner, RecCoder):
                raise ValueError("a rec-stream chunk has REC parts")
            z_s = self._walk(ctx, lambda part, part_ctx, mask: inner.receive_from(part_ctx, reader))
        else:
            reader = _PartReader(payload, self.layout in PACKED.values(), self.inner.coder_id != CODER_UQ)
            z_s = self._walk(ctx, lambda part, part_ctx, mask: self.inner.receive(part_ctx, reader.next(part)))
        reader.finish()
        return z_s


def grouped_parts(coder_id: int, payload: bytes) -> list[bytes]:
    """The PARTS payloads of a grouped step chunk (either layout), each as its part's coder wrote it (BitstreamError
    where the chunk is cut or malformed)."""
    if coder_id in STREAMS:
        raise ValueError("the parts of a rec-stream chunk share one range coder: only the model can tell them apart")
    reader = _PartReader(payload, coder_id in PACKED.values(), _PART_CODER[coder_id] != CODER_UQ)
    parts = [reader.next(part) for part in range(PARTS)]
    reader.finish()
    return parts


def part_coder(coder_id: int) -> int:
    """The coder id of a grouped step chunk's parts; any other id unchanged."""
    return _PART_CODER.get(coder_id, coder_id)


def _fit_name(wanted: bytes) -> str:
    """The name of the earlier step context fit a chunk names by (a prefix of) its hash."""
    if len(wanted) == HASH_SIZE:
        return earlier_fit_name(STEP_CONTEXT_FILE, wanted)
    return f"a {STEP_CONTEXT_FILE.removesuffix('.pt')}.{wanted.hex()}*.pt"


def grouped_receiver(coder_id: int, chunk: int, fits: Sequence[StepNets], payload: bytes) -> StepCoder:
    """The coder that reads step chunk `chunk`: `steps.receiver` for a plain chunk; for a grouped one, its parts'
    coder under the step's network in the fit (of the model's `fits`: step_context.pt and its earlier fits) whose
    weights the chunk names (ModelError if none has them)."""
    if coder_id not in _PART_CODER:
        return receiver(coder_id, chunk)
    wanted = payload[: hash_size(coder_id)]
    fit = next((f for f in fits if f.weights_hash[: len(wanted)] == wanted), None)
    if fit is None or chunk not in fit.nets:
        if fit is not None:
            found = f"those weights have no network for step {chunk + 1}"
        elif fits:
            found = (f"this model's step context fits are {', '.join(f.weights_hash.hex() for f in fits)} "
                     f"({STEP_CONTEXT_FILE} and the earlier fits beside the model file), and "
                     f"{_fit_name(wanted)} is not beside it")
        else:
            found = f"this model has no step context network ({STEP_CONTEXT_FILE} beside the model file)"
        raise ModelError(f"chunk {chunk} was sent with step context weights {wanted.hex()}, but {found}; rungs 0 to "
                         f"{chunk} decode without it (--rung {chunk})")
    return GroupedCoder(receiver(_PART_CODER[coder_id], chunk), fit, chunk, layout=coder_id)


def grouped_coders(coders: list[StepCoder], nets: StepNets | None) -> list[StepCoder]:
    """The encoder's coders with each step that has a network in `nets` grouped (`GroupedCoder.send` sends a small
    step plainly)."""
    if nets is None:
        return coders
    return [GroupedCoder(c, nets, i) if i in nets.nets and c.coder_id in GROUPED else c
            for i, c in enumerate(coders)]


__all__ = ["GROUPED", "MIN_STEP_BITS", "PACKED", "PARTS", "STEP_CONTEXT_FILE", "STREAMS", "WRITTEN", "GroupedCoder",
           "StepNets", "group_prior", "grouped_coders", "grouped_parts", "grouped_receiver", "hash_size", "load_step_nets",
           "part_coder", "refined_inputs", "save_step_nets"]
