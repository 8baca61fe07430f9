"""Shared-seed REC: candidate scoring (reference, vectorised, Triton), index coding, one step, and whole files."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffcodec
from conftest import KODIM20, TINY_STEPS, model_with_codec_file, rgb_pixels
from test_cli import cli, ok, strict_json
from diffcodec import codec, steps
from diffcodec.bitstream import CODER_REC, CODER_REC_ESCAPE, CODER_REC_POWER, CODER_UQ, read_stream
from diffcodec.entropy.index import ALPHA_CHOICES, best_alpha, decode_indices, encode_indices, index_bits
from diffcodec.errors import BadInputError, BitstreamError, ModelError
from diffcodec import rng
from diffcodec.rec import StepPrior, decode_step, encode_step
from diffcodec.rec import coder, native
from diffcodec.rec.coder import MAX_CHUNK_ELEMENTS, NARROW_DRAWS, _regenerate, _screened, _screened_batch, _select, greedy_split
from diffcodec.rec.family import candidates, kl_bits
from diffcodec.rec.score import GaussianScreen, score_cpu, score_reference
from diffcodec.steps import Coding, step_coders
from diffcodec.zoo import CODEC_FILE

FAMILIES = ("uniform", "gaussian")
CROP = rgb_pixels(KODIM20)[:12, :16]  # 576 sub-pixels: REC of the tiny random model stays fast


def toy_step(n: int, seed: int = 0) -> tuple[StepPrior, torch.Tensor]:
    """A prior and a posterior mean drawn from that prior (a calibrated model), flat float64."""
    g = torch.Generator().manual_seed(seed)
    mu_p = torch.randn(n, generator=g, dtype=torch.float64)
    sigma_p = 0.05 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64)
    mu_q = mu_p + sigma_p * torch.randn(n, generator=g, dtype=torch.float64)
    return StepPrior(mu_p, sigma_p, torch.tensor(0.3, dtype=torch.float64)), mu_q


def toy_candidates(p: StepPrior, mu_q: torch.Tensor, rows: int) -> torch.Tensor:
    """Candidates around the posterior, some outside the uniform posterior's support."""
    g = torch.Generator().manual_seed(1)
    return mu_q + 0.3 * torch.randn(rows, mu_q.shape[0], generator=g, dtype=torch.float64)


@pytest.mark.parametrize("family", FAMILIES)
def test_vectorised_score_matches_the_reference(family: str) -> None:
    p, mu_q = toy_step(9)
    z = toy_candidates(p, mu_q, 40)
    expected = score_reference(family, z, p, mu_q)
    torch.testing.assert_close(score_cpu(family, z, p, mu_q), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_triton_score_matches_the_reference(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    from diffcodec.rec.kernels import score_triton

    p, mu_q = toy_step(37)
    z = toy_candidates(p, mu_q, 70)  # more rows and columns than one block
    expected = score_reference(family, z, p, mu_q)
    if torch.cuda.is_available():
        p, mu_q, z = StepPrior(p.mu_p.cuda(), p.sigma_p.cuda(), p.delta.cuda()), mu_q.cuda(), z.cuda()
    torch.testing.assert_close(score_triton(family, z, p, mu_q).cpu(), expected, rtol=1e-12, atol=1e-9)


def test_raw_draws_give_the_generators_doubles() -> None:
    a = rng.chunk_generator(7, rng.REC_CANDIDATES, 2, 3)
    b = rng.chunk_generator(7, rng.REC_CANDIDATES, 2, 3)
    assert np.array_equal(rng.unit_doubles(a.bit_generator.random_raw(1000)), b.random(1000))


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32, 2**63 - 1])
def test_chunk_streams_are_the_generators_streams(seed: int) -> None:
    """rng.chunk_streams (numpy's seeding, vectorised) gives each chunk's PCG64 state and increment exactly, for seeds
    of one and two 32-bit words, plain and grouped step ids, and chunk ids up to 2^32 - 1; rng.stream_generator
    draws from such a stream what the chunk's generator draws."""
    chunks = np.concatenate([np.arange(40), [2**20, 2**31, 2**32 - 1]])
    for purpose, step in [(rng.REC_CANDIDATES, 0), (rng.REC_TIMES, 4), (rng.REC_CANDIDATES, rng.part_step(3, 11))]:
        words = []
        for c in chunks.tolist():
            state = rng.chunk_generator(seed, purpose, step, c).bit_generator.state["state"]
            words.append([state["state"] >> 64, state["state"] & (2**64 - 1), state["inc"] >> 64, state["inc"] & (2**64 - 1)])
        streams = rng.chunk_streams(seed, purpose, step, chunks)
        assert streams.tolist() == words
        again = rng.stream_generator(streams[-1].tolist(), rng.stream_generator(streams[0].tolist()))  # reused
        assert np.array_equal(again.random_raw(5), rng.chunk_generator(seed, purpose, step, 2**32 - 1).bit_generator.random_raw(5))


def test_16_bit_draws_are_the_lanes_of_the_raw_draws() -> None:
    raw = np.array([0x0004_0003_0002_0001, 0xFFFF_0000_8000_7FFF], np.uint64)
    assert rng.lanes16(raw).tolist() == [1, 2, 3, 4, 0x7FFF, 0x8000, 0, 0xFFFF]
    assert rng.draw_words(9, 16) == 3 and rng.draw_words(8, 16) == 2 and rng.draw_words(9, 64) == 9
    v = rng.unit_values(raw, 6, 16)
    assert v.shape == (6,) and v[0] == 1.5 / 65536 and v[5] == 0.5 + 0.5 / 65536  # bin midpoints, the 6 first lanes
    assert rng.unit16(np.array([0, 0xFFFF], np.uint16)).tolist() == [0.5 / 65536, 1 - 0.5 / 65536]


def test_gaussian_screen_scores_as_the_exact_score_does() -> None:
    p, mu_q = toy_step(300)
    k = rng.lanes16(rng.chunk_generator(0, rng.REC_CANDIDATES, 0, 0).bit_generator.random_raw((64, 75)))
    exact = score_cpu("gaussian", candidates("gaussian", p, torch.from_numpy(rng.unit16(k))[:, None]), p, mu_q)
    screen = GaussianScreen(p, mu_q)
    cols, offsets = np.arange(300), np.array([0])
    offset = exact.numpy() - screen.exact(k, cols, offsets)[:, 0]  # the chunk's constant: the same for every candidate
    assert np.ptp(offset) < 1e-8
    error = np.abs(screen.rough(k, cols, offsets)[:, 0] + offset[0] - exact.numpy())
    assert error.max() < 1e-4 * np.ptp(exact.numpy())  # float32 sums of the same table


def exact_pick(p: StepPrior, mu_q: torch.Tensor, seed: int, step: int, chunk: int, a: int, b: int,
               log_t: np.ndarray, sharpen: float = 1.0) -> tuple[int, np.ndarray]:
    """(j*, its uniforms) of chunk `chunk` (elements a..b), drawn at 16 bits, by scoring every candidate exactly,
    given its arrival times log T: argmin_j log T_j - sharpen log w_j."""
    raw = rng.chunk_generator(seed, rng.REC_CANDIDATES, step, chunk).bit_generator.random_raw(
        (len(log_t), rng.draw_words(b - a, 16)))
    v = rng.unit_values(raw, b - a, 16)[:, None]
    z = candidates("gaussian", p.take(slice(a, b)), torch.from_numpy(v))
    j = int(np.argmin(log_t - sharpen * score_cpu("gaussian", z, p.take(slice(a, b)), mu_q[a:b]).numpy()))
    return j, v[j]


@pytest.fixture(params=["kernel", "numpy"])
def search(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of the encoder's Gaussian searches: the fused kernel (skipped without a C compiler) and numpy."""
    if request.param == "numpy":
        monkeypatch.setattr(native, "_kernel", lambda: None)
    elif not native.available():
        pytest.skip("no C compiler here: the fused REC kernel is not built")
    return request.param


@pytest.mark.parametrize(("count", "sharpen"), [(2, 1.0), (1024, 1.0), (1024, 2.5)])  # 2: fewer rows than lanes
def test_screened_search_picks_what_the_exact_search_picks(search: str, count: int, sharpen: float) -> None:
    p, mu_q = toy_step(MAX_CHUNK_ELEMENTS + 340, seed=2)
    screen = GaussianScreen(p, mu_q, sharpen)
    chunks = [(0, 0, 1), (1, 1, 5), (2, 5, 40), (3, 40, 340), (4, 340, 340 + MAX_CHUNK_ELEMENTS)]
    for chunk, a, b in chunks:  # alone: the exact search, arrival times and all
        exact = _select("gaussian", 9, 1, chunk, p.take(slice(a, b)), mu_q[a:b], count, torch.device("cpu"), 16,
                        sharpen)
        j, row = _screened_batch(screen, 9, 1, [(chunk, a, b)], count)[0]
        assert j == exact[0] and np.array_equal(row, exact[1])
    # side by side: chunk k's arrival times are column k of the first chunk's stream
    times = rng.chunk_generator(9, rng.REC_TIMES, 1, 0).standard_exponential((count, len(chunks)))
    for k, ((chunk, a, b), (j, row)) in enumerate(zip(chunks, _screened_batch(screen, 9, 1, chunks, count))):
        exact_j, exact_row = exact_pick(p, mu_q, 9, 1, chunk, a, b, np.log(np.cumsum(times[:, k])), sharpen)
        assert j == exact_j and np.array_equal(row, exact_row)


def test_kernel_and_numpy_encode_the_same_file(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel only makes the encoder faster: a file of Gaussian REC steps has the same bytes with either search."""
    if not native.available():
        pytest.skip("no C compiler here: the fused REC kernel is not built")
    kw = dict(model=tiny_model, seed=3, coder="hybrid", rec_steps=2, posterior="gaussian", rec_bits=6)
    with_kernel = codec.encode_report(CROP, **kw).data
    monkeypatch.setattr(native, "_kernel", lambda: None)
    assert codec.encode_report(CROP, **kw).data == with_kernel


@pytest.mark.parametrize("workers", [1, 3])
def test_screened_step_search_is_the_same_on_any_threads(workers: int, search: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of mixed candidate counts: the picks do not depend on the threads, and each chunk's draws are the
    uniforms the decoder regenerates from its index."""
    p, mu_q = toy_step(3000, seed=4)
    screen = GaussianScreen(p, mu_q)
    starts = np.array([0, 3, 50, 51, 400, 420, 1500, 3000])
    counts = dict(enumerate([64, 512, 32, 512, 64, 256, 512]))
    found = _screened(screen, 5, 2, starts, counts)
    monkeypatch.setattr(coder, "SEARCH_WORKERS", workers)
    again = _screened(screen, 5, 2, starts, counts)
    assert list(found) == list(again) == list(counts)
    assert [j for j, _ in found.values()] == [j for j, _ in again.values()]
    assert all(np.array_equal(r, s) for (_, r), (_, s) in zip(found.values(), again.values()))
    z = _regenerate("gaussian", 5, 2, p, starts, {c: j for c, (j, _) in found.items()}, 16)
    from_rows = candidates("gaussian", p, torch.from_numpy(np.concatenate([r for _, r in found.values()], 1)))
    assert torch.equal(z, from_rows)


def reference_split(units: list[int], limit: int) -> tuple[list[int], list[int]]:
    """The chunking rule element by element: close the chunk before an element that would take it over `limit`
    or past MAX_CHUNK_ELEMENTS (never before its first element)."""
    starts, budgets, total, first = [0], [], 0, 0
    for i, u in enumerate(units):
        if i > first and (total + u > limit or i - first == MAX_CHUNK_ELEMENTS):
            starts.append(i)
            budgets.append(total)
            total, first = 0, i
        total += u
    return starts + [len(units)], budgets + [total]


@pytest.mark.parametrize("case", ["mixed", "zeros", "lone-large", "empty", "one"])
def test_greedy_split_is_the_element_by_element_rule(case: str) -> None:
    gen = np.random.default_rng(3)
    units = {"mixed": gen.integers(0, 700, 20_000) * (gen.random(20_000) < 0.7),
             "zeros": np.r_[np.zeros(9_000, np.int64), [5, 2000, 0, 1280, 1281]],  # past MAX_CHUNK_ELEMENTS
             "lone-large": np.array([5000, 1, 1, 5000, 5000, 0]),
             "empty": np.zeros(0, np.int64), "one": np.array([3])}[case]
    starts, budgets = greedy_split(units, 1280)
    assert (starts.tolist(), budgets.tolist()) == reference_split(units.tolist(), 1280)


def test_indices_round_trip_and_cost_about_their_budget() -> None:
    bits = np.array([3, 8, 8, 1, 12, 8])
    indices = np.array([0, 255, 1023, 7, 4000, 0])
    payload, info = encode_indices(indices, bits, margin=2)
    assert (decode_indices(payload, bits, margin=2) == indices).all()
    assert abs(8 * len(payload) - info) <= 64
    with pytest.raises(BadInputError, match="index"):
        encode_indices(np.array([1 << 10]), np.array([8]), margin=2)  # only 2^(8 + 2) candidates


@pytest.mark.parametrize("draw_bits", [16, 64])  # 64: the first files' draws still decode
@pytest.mark.parametrize("family", FAMILIES)
def test_step_decodes_to_the_encoders_sample_at_about_the_kl(family: str, draw_bits: int) -> None:
    p, mu_q = toy_step(2000)
    sent = encode_step(family, 5, 0, p, mu_q, draw_bits=draw_bits)
    assert bool(sent.payload[0] & NARROW_DRAWS) == (draw_bits == 16)
    z_s = decode_step(sent.payload, 5, 0, p)
    assert torch.equal(z_s, sent.z_s)  # bit-identical: the decoder rebuilds the chosen candidate
    kl = float(kl_bits(family, p, mu_q).sum())
    assert sent.kl_bits == pytest.approx(kl)
    assert kl <= sent.bits <= 1.1 * kl + 4 * sent.chunks  # the target: 10% + a few bits per chunk
    assert 8 * len(sent.payload) <= sent.bits + 64
    residual = (z_s - mu_q) / p.sigma_q  # q's samples: uniform of std 1 (inside +-sqrt(3)) or N(0, 1)
    assert abs(float(residual.mean())) < 0.1 and 0.85 < float(residual.std()) < 1.2
    if family == "uniform":
        assert float((residual.abs() <= math.sqrt(3)).double().mean()) > 0.97


@pytest.mark.parametrize("family", FAMILIES)
def test_a_smaller_fraction_sends_fewer_bits_and_a_sample_nearer_the_prior(family: str) -> None:
    """rec_fraction < 1: chunks planned for part of the KL carry more of it than their candidates are sized for;
    the decoder still rebuilds the encoder's sample from the payload alone."""
    p, mu_q = toy_step(3000, seed=5)
    full, part = encode_step(family, 5, 0, p, mu_q), encode_step(family, 5, 0, p, mu_q, fraction=0.5)
    assert torch.equal(decode_step(part.payload, 5, 0, p), part.z_s)
    assert part.chunks < 0.7 * full.chunks and part.bits < 0.9 * full.bits
    assert float((part.z_s - p.mu_p).square().mean()) < float((full.z_s - p.mu_p).square().mean())
    for bad in (0.0, -1.0, 5.0, float("nan")):
        with pytest.raises(BadInputError, match="rec_fraction"):
            encode_step(family, 5, 0, p, mu_q, fraction=bad)
    with pytest.raises(BadInputError, match="64 or 16 bits"):
        encode_step(family, 5, 0, p, mu_q, draw_bits=32)


def realized_log_w(p: StepPrior, mu_q: torch.Tensor, z_s: torch.Tensor) -> float:
    """sum_i log q(z_i) / p(z_i) of a Gaussian step's sample, in nats."""
    return float(score_cpu("gaussian", z_s[None], p, mu_q)[0])


def test_a_sharpened_pick_lies_nearer_q_and_still_decodes() -> None:
    """rec_sharpen > 1 (Gaussian steps): with 2^(b + margin) candidates the plain pick's log w falls short of the KL
    (it leans toward the prior); a sharper pick has a larger log w, at a larger index cost. The decoder needs
    nothing more."""
    p, mu_q = toy_step(3000, seed=6)
    plain, sharp = (encode_step("gaussian", 5, 0, p, mu_q, target_bits=8, margin=2, sharpen=b) for b in (1.0, 3.0))
    assert torch.equal(decode_step(sharp.payload, 5, 0, p), sharp.z_s)
    assert sharp.chunks == plain.chunks and sharp.bits > plain.bits
    kl_nats = plain.kl_bits * math.log(2)
    assert realized_log_w(p, mu_q, plain.z_s) < 0.95 * kl_nats < \
        realized_log_w(p, mu_q, sharp.z_s)
    for bad in (0.5, 9.0, float("nan"), True):
        with pytest.raises(BadInputError, match="rec_sharpen"):
            encode_step("gaussian", 5, 0, p, mu_q, sharpen=bad)


def prior_far_too_sure(seed: int) -> tuple[StepPrior, torch.Tensor]:
    """A toy step whose prior is sure of elements 1000-1999 and wrong about 100 of them (an edge it missed)."""
    p, mu_q = toy_step(3000, seed=seed)
    sure = p.sigma_p.clone()
    sure[1000:2000] = 1e-3
    wrong = StepPrior(p.mu_p, sure, p.delta)
    edge = mu_q.clone()
    edge[1000:2000] = wrong.mu_p[1000:2000]
    edge[1500:1600] += 0.5
    return wrong, edge


def test_out_of_reach_finds_a_prior_far_too_sure() -> None:
    """A calibrated prior leaves no chunk far past its candidates' reach; a run of confident elements with an edge the
    prior missed makes a long chunk whose KL no candidate reaches, and `escape` skips just that: its elements are NaN
    on both sides, the other chunks go by REC as before."""
    p, mu_q = toy_step(3000, seed=7)
    assert len(encode_step("gaussian", 5, 0, p, mu_q, 8, 3, escape=4.0).skipped) == 0
    wrong, edge = prior_far_too_sure(7)
    sent = encode_step("gaussian", 5, 0, wrong, edge, 8, 3, escape=4.0)
    assert len(sent.skipped) >= 1
    lost = torch.isnan(sent.z_s)
    assert lost[1500:1600].all() and not lost[:900].any() and not lost[2100:].any()  # a chunk may reach past the run
    assert torch.equal(decode_step(sent.payload, 5, 0, wrong, skipped=sent.skipped).nan_to_num(7.0),
                       sent.z_s.nan_to_num(7.0))
    plain = encode_step("gaussian", 5, 0, wrong, edge, 8, 3)
    assert len(plain.skipped) == 0 and plain.chunks == sent.chunks + len(sent.skipped)
    assert sent.kl_bits < plain.kl_bits - 100  # the skipped chunks' KL is not REC's
    with pytest.raises(BitstreamError, match="skips chunk"):
        decode_step(sent.payload, 5, 0, wrong, skipped=np.array([plain.chunks]))
    for bad in (0.0, -1.0, 65.0, float("nan"), True):
        with pytest.raises(BadInputError, match="rec_escape"):
            encode_step("gaussian", 5, 0, p, mu_q, escape=bad)


def test_rec_escape_files_send_skipped_chunks_by_uq_and_decode_exactly(tiny_model: Path, tmp_path: Path) -> None:
    """codec.json's rec_escape makes REC steps `rec-escape` chunks; at a small factor the tiny random model's steps
    skip chunks, which go by UQ, and the file decodes exactly, every rung checked against the encoder's."""
    model = model_with_codec_file(tiny_model, tmp_path / "m", {"coder": "rec", "posterior": "gaussian", "rec_escape": 0.5})
    data = diffcodec.encode(CROP, model=model, seed=3)
    chunks = read_stream(data).chunks[:-1]
    assert [c.coder for c in chunks] == [CODER_REC_ESCAPE] * TINY_STEPS
    assert sum(coder.without_skips(c.payload, True)[0].size for c in chunks) > 0
    assert np.array_equal(diffcodec.decode_rungs(data, model=tiny_model)[-1].pixels, CROP)
    plain = diffcodec.encode(CROP, model=model_with_codec_file(tiny_model, tmp_path / "p", {
        "coder": "rec", "posterior": "gaussian"}), seed=3)
    assert [c.coder for c in read_stream(plain).chunks[:-1]] == [CODER_REC_POWER] * TINY_STEPS


def test_skipped_chunks_travel_after_the_prefix_and_cost_nothing_when_none() -> None:
    """`with_skips` flags the family byte and puts the skipped chunks and the side payload after the prefix;
    `without_skips` gives back what went in, a step with no skipped chunk pays no byte for the layout, and a cut or
    a flagged payload read as plain REC is an error."""
    wrong, edge = prior_far_too_sure(8)
    sent = encode_step("gaussian", 5, 0, wrong, edge, 8, 3, escape=4.0)
    assert len(sent.skipped) > 0
    side = bytes(range(200))
    payload = coder.with_skips(sent.payload, True, sent.skipped, side)
    skipped, got, rest = coder.without_skips(payload, True)
    assert skipped.tolist() == sent.skipped.tolist() and got == side and rest == sent.payload
    assert coder.with_skips(sent.payload, True, np.zeros(0, np.int64), b"") == sent.payload
    assert coder.without_skips(sent.payload, True)[0].size == 0
    for cut in (payload[:7], payload[:6 + 3]):
        with pytest.raises(BitstreamError):
            coder.without_skips(cut, True)
    with pytest.raises(BitstreamError, match="invalid"):
        decode_step(payload, 5, 0, wrong)  # a rec-power reader does not take skipped chunks


@pytest.mark.parametrize("family", FAMILIES)
def test_a_step_of_no_elements_round_trips(family: str) -> None:
    """An empty part (a checkerboard group of a one-row image) is one empty chunk on both sides."""
    p, mu_q = toy_step(0)
    sent = encode_step(family, 5, 0, p, mu_q)
    assert sent.z_s.shape == (0,) and decode_step(sent.payload, 5, 0, p).shape == (0,)


def test_power_pmf_round_trips_and_fits_its_exponent() -> None:
    rng_ = np.random.default_rng(0)
    indices = np.minimum((rng_.pareto(0.6, 3000)).astype(np.int64), 511)  # heavy-tailed, mostly small: like j*
    bits = np.full(3000, 5)
    alpha = best_alpha(indices, bits, margin=4)
    payload, info = encode_indices(indices, bits, 4, alpha)
    assert (decode_indices(payload, bits, 4, alpha) == indices).all()
    assert abs(8 * len(payload) - info) <= 64
    cost = {a: index_bits(indices, bits, 4, a) for a in ALPHA_CHOICES}
    assert cost[alpha] == min(cost.values()) and info < index_bits(indices, bits, 4) - 0.5 * len(indices)


@pytest.mark.parametrize("family", FAMILIES)
def test_power_layout_sends_the_same_sample_in_fewer_bits(family: str) -> None:
    p, mu_q = toy_step(3000, seed=4)
    power, flat = encode_step(family, 5, 0, p, mu_q, 5, 4), encode_step(family, 5, 0, p, mu_q, 5, 4, power=False)
    assert torch.equal(power.z_s, flat.z_s) and len(power.payload) < len(flat.payload)
    assert torch.equal(decode_step(power.payload, 5, 0, p), power.z_s)
    assert torch.equal(decode_step(flat.payload, 5, 0, p, power=False), flat.z_s)


def test_a_file_in_the_first_rec_layout_still_decodes(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = codec.encode_report(CROP, model=tiny_model, seed=3, coder="hybrid", rec_steps=2, posterior="gaussian",
                              rec_bits=4)
    monkeypatch.setattr(steps, "RecCoder", functools.partial(steps.RecCoder, power=False))
    old = codec.encode_report(CROP, model=tiny_model, seed=3, coder="hybrid", rec_steps=2, posterior="gaussian",
                              rec_bits=4)
    monkeypatch.undo()
    assert [c.coder for c in read_stream(old.data).chunks][:2] == [CODER_REC] * 2
    assert [c.coder for c in read_stream(new.data).chunks][:2] == [CODER_REC_POWER] * 2
    old_rungs, new_rungs = codec.decode_rungs(old.data, model=tiny_model), codec.decode_rungs(new.data, model=tiny_model)
    assert all((a.pixels == b.pixels).all() for a, b in zip(old_rungs, new_rungs))  # the same samples, rung by rung
    assert (old_rungs[-1].pixels == CROP).all()


def test_step_payload_prefix_is_checked() -> None:
    p, mu_q = toy_step(50)
    payload = encode_step("gaussian", 5, 0, p, mu_q).payload
    with pytest.raises(BitstreamError, match="prefix"):
        decode_step(bytes([9]) + payload[1:], 5, 0, p)  # unknown family id
    with pytest.raises(BitstreamError, match="cut inside"):
        decode_step(payload[:3], 5, 0, p)


@pytest.mark.parametrize(("coder", "posterior", "rec_steps", "coders"), [
    ("rec", "uniform", None, [CODER_REC_POWER] * TINY_STEPS),
    ("rec", "gaussian", None, [CODER_REC_POWER] * TINY_STEPS),
    ("hybrid", "gaussian", 1, [CODER_REC_POWER] + [CODER_UQ] * (TINY_STEPS - 1)),
])
def test_rec_file_is_exact_at_its_last_rung_and_every_rung_decodes(
        coder: str, posterior: str, rec_steps: int | None, coders: list[int], tiny_model: Path) -> None:
    report = codec.encode_report(CROP, model=tiny_model, seed=3, coder=coder, rec_steps=rec_steps,
                                 posterior=posterior, rec_bits=4)
    stream = read_stream(report.data)
    assert [c.coder for c in stream.chunks] == coders + [CODER_UQ]  # the decoder needs no flag
    rungs = codec.decode_rungs(report.data, model=tiny_model)
    assert [r.rung for r in rungs] == list(range(TINY_STEPS + 2))
    assert (rungs[-1].pixels == CROP).all()
    assert (diffcodec.decode(report.data[: stream.spans[1].end], model=tiny_model) == rungs[2].pixels).all()
    assert all(r.kl_bits is not None and r.kl_bits > 0 for r in report.rungs[1:-1])


def test_rec_and_uq_files_differ_only_in_their_step_chunks(tiny_model: Path) -> None:
    uq = read_stream(diffcodec.encode(CROP, model=tiny_model, seed=3))
    rec = read_stream(diffcodec.encode(CROP, model=tiny_model, seed=3, coder="hybrid", rec_steps=0))
    assert uq.header == rec.header and uq.chunks == rec.chunks  # hybrid with no REC step is plain uq


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"coder": "uq", "rec_steps": 1}, "only applies to the hybrid"),
    ({"coder": "hybrid", "rec_steps": TINY_STEPS + 1}, "rec_steps must be in"),
    ({"coder": "uq", "posterior_family": "gaussian"}, "needs REC"),
    ({"coder": "arith"}, "unknown coder"),
    ({"coder": "rec", "posterior_family": "laplace"}, "unknown posterior"),
])
def test_bad_coder_choices_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        step_coders(TINY_STEPS, **kwargs)


def test_cli_hybrid_gaussian_round_trip(tmp_path: Path, tiny_model: Path) -> None:
    image, out, back = tmp_path / "crop.png", tmp_path / "crop.dcz", tmp_path / "back.png"
    Image.fromarray(CROP).save(image)
    ok(cli("encode", image, "-o", out, "--model", tiny_model, "--coder", "hybrid", "--rec-steps", 1,
           "--posterior", "gaussian"))
    assert strict_json(ok(cli("info", out, "--json")).stdout)["coders"] == ["rec-power"] + ["uq"] * TINY_STEPS
    ok(cli("decode", out, "-o", back, "--model", tiny_model))
    assert (rgb_pixels(back) == CROP).all()


@pytest.mark.parametrize(("args", "flag"), [
    (("--rec-steps", 1), "--rec-steps"),
    (("--coder", "rec", "--posterior", "laplace"), "--posterior"),
    (("--posterior", "gaussian"), "--posterior"),
])
def test_cli_refuses_conflicting_coder_options(args: tuple, flag: str, tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "x.dcz"
    result = cli("encode", KODIM20, "-o", out, "--model", tiny_model, *args)
    assert result.exit_code == 2 and flag in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_a_named_coder_starts_from_the_built_in_choices() -> None:
    default = Coding("hybrid", 4, "gaussian", rec_bits=6, rec_margin=3, rec_fraction=0.5, rec_sharpen=2.0)
    assert default.override() == default
    assert default.override(rec_steps=2) == Coding("hybrid", 2, "gaussian", 6, 3, 0.5, 2.0)
    assert default.override("rec") == Coding("rec", None, "uniform", 6, 3, 0.5, 2.0)  # the budget stays the model's
    assert default.override("uq", rec_bits=8) == Coding("uq", None, "uniform", 8, 3, 0.5, 2.0)


def test_codec_json_chooses_the_default_coder(tiny_model: Path, tmp_path: Path) -> None:
    """A model's codec.json may make hybrid Gaussian REC its default; the caller can still pick another coder."""
    entries = {"coder": "hybrid", "rec_steps": 1, "posterior": "gaussian", "rec_bits": 4, "rec_margin": 1}
    model = model_with_codec_file(tiny_model, tmp_path / "m", entries)
    data = diffcodec.encode(CROP, model=model, seed=3)
    assert [c.coder for c in read_stream(data).chunks] == [CODER_REC_POWER] + [CODER_UQ] * TINY_STEPS
    assert (diffcodec.decode(data, model=tiny_model) == CROP).all()
    assert [c.coder for c in read_stream(diffcodec.encode(CROP, model=model, seed=3, coder="uq")).chunks] == \
        [CODER_UQ] * (TINY_STEPS + 1)
    image = tmp_path / "crop.png"
    Image.fromarray(CROP).save(image)
    ok(cli("encode", image, "-o", tmp_path / "a.dcz", "--model", model, "--rec-steps", 2))  # hybrid by default
    assert strict_json(ok(cli("info", tmp_path / "a.dcz", "--json")).stdout)["coders"] == ["rec-power"] * 2 + ["uq"] * 2


def test_a_default_of_rec_for_every_step_fits_fewer_steps(tiny_model: Path, tmp_path: Path) -> None:
    """codec.json's rec_steps = all steps still encodes with --steps fewer (all of them by REC); a caller's own
    rec_steps beyond the steps is refused."""
    entries = {"coder": "hybrid", "rec_steps": TINY_STEPS, "posterior": "gaussian"}
    model = model_with_codec_file(tiny_model, tmp_path / "m", entries)
    data = diffcodec.encode(CROP, model=model, seed=3, steps=TINY_STEPS - 1)
    assert [c.coder for c in read_stream(data).chunks[:-1]] == [CODER_REC_POWER] * (TINY_STEPS - 1)
    assert (diffcodec.decode(data, model=tiny_model) == CROP).all()
    with pytest.raises(BadInputError, match="rec_steps must be in"):
        diffcodec.encode(CROP, model=model, seed=3, steps=TINY_STEPS - 1, rec_steps=TINY_STEPS)


def test_codec_json_rec_fraction_reaches_the_encoder(tiny_model: Path, tmp_path: Path) -> None:
    """The factor F a REC step sends (payload bytes 3-4) is the fraction times F at fraction 1, about."""
    def factor(fraction: float) -> int:
        entries = {"coder": "rec", "posterior": "gaussian", "rec_fraction": fraction}
        model = model_with_codec_file(tiny_model, tmp_path / str(fraction), entries)
        data = diffcodec.encode(CROP, model=model, seed=3)
        assert (diffcodec.decode(data, model=tiny_model) == CROP).all()
        return [int.from_bytes(c.payload[3:5], "little") for c in read_stream(data).chunks[1:-1]]

    full, half = factor(1.0), factor(0.5)
    assert all(h == pytest.approx(f / 2, abs=1) for f, h in zip(full, half) if f < 65535) and min(full) < 65535


def test_codec_json_rec_sharpen_reaches_the_encoder(tiny_model: Path, tmp_path: Path) -> None:
    """rec_sharpen changes the encoder's picks (the step chunks' bytes), not what the decoder needs."""
    def steps_of(sharpen: float) -> list[bytes]:
        entries = {"coder": "rec", "posterior": "gaussian", "rec_sharpen": sharpen}
        model = model_with_codec_file(tiny_model, tmp_path / str(sharpen), entries)
        data = diffcodec.encode(CROP, model=model, seed=3)
        assert (diffcodec.decode(data, model=tiny_model) == CROP).all()
        return [c.payload for c in read_stream(data).chunks[:-1]]

    plain, sharp = steps_of(1.0), steps_of(2.0)
    assert plain != sharp and plain == steps_of(1)


def test_codec_json_rec_margin_may_differ_per_step(tiny_model: Path, tmp_path: Path) -> None:
    """A list of margins gives each REC step its own (payload byte 2), the last one for the steps after the list; the
    file decodes exactly. A file of fewer steps takes the list's first entries."""
    model = model_with_codec_file(tiny_model, tmp_path / "m", {"coder": "rec", "posterior": "gaussian",
                                                               "rec_margin": [1, 3]})
    for count, margins in [(TINY_STEPS, [1, 3, 3]), (1, [1])]:
        data = diffcodec.encode(CROP, model=model, seed=3, steps=count)
        assert [c.payload[2] for c in read_stream(data).chunks[:-1]] == margins
        assert (diffcodec.decode(data, model=tiny_model) == CROP).all()


@pytest.mark.parametrize("entries", [{"coder": "hybrid", "rec_steps": TINY_STEPS + 1}, {"rec_margin": 7},
                                     {"coder": "rec", "rec_margin": []}, {"coder": "rec", "rec_margin": [2, 7]},
                                     {"coder": "rec", "rec_margin": [2, "3"]},
                                     {"coder": "rec", "rec_sharpen": 0.5}, {"coder": "rec", "rec_sharpen": "2"},
                                     {"coder": "rec", "rec_fraction": 0}, {"coder": "rec", "rec_fraction": "half"},
                                     {"coder": "uq", "posterior": "gaussian"}, {"coder": "arith"}, {"rec_bitz": 4}])
def test_a_bad_default_coder_is_refused(tiny_model: Path, tmp_path: Path, entries: dict) -> None:
    model = model_with_codec_file(tiny_model, tmp_path / "m", entries)
    with pytest.raises(ModelError, match=CODEC_FILE):
        diffcodec.encode(CROP, model=model)
