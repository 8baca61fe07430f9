"""Rung filters: the encoder's least-squares filter per lossy rung, its bytes, the `filtered` chunk, and files whose
rungs the decoder shows as the encoder measured them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import diffcodec
from diffcodec import codec
from diffcodec.bitstream import (CODER_FILTERED, CODER_REC_POWER, CODER_UQ, Chunk, read_stream, unwrap_filtered,
                                 wrap_filtered, write_stream)
from diffcodec.errors import BadInputError, BitstreamError, ModelError
from diffcodec.rung_filter import (SHAPES, RungFilter, apply_filter, filter_cost, filter_stats, fit_filter, pack_filter,
                                   unpack_filter)

from conftest import DEFAULT_WEIGHTS, KODIM01, KODIM20, SAMPLE, TINY_STEPS, model_with_codec_file, rgb_pixels
from test_cli import cli, ok, strict_json


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.round().clamp(0, 255) - b).double().square().mean())


@pytest.fixture(scope="module")
def blurred() -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x): a real crop and a colour-shifted 3 x 3 blur of it, in pixel units: an image a linear filter can fix."""
    x = _tensor(rgb_pixels(KODIM01))
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
    y = y * torch.tensor([0.9, 1.0, 1.05]).view(1, 3, 1, 1) + 4.0  # a per-channel gain and offset too
    return y.clamp(0, 255), x


def test_the_fitted_filter_undoes_most_of_a_blur_and_predicts_its_gain(blurred) -> None:
    """On a blurred, shifted crop the chosen filter lowers the error by several dB, about as much as it predicts."""
    y, x = blurred
    fitted = fit_filter(filter_stats(y, x), rung_bits=[1e6], slope_db=1.0)
    assert fitted is not None
    f, gain, size = fitted
    measured = 10 * math.log10(_mse(y, x) / _mse(apply_filter(f, y), x))
    assert gain > 3.0 and abs(measured - gain) < 0.5
    assert abs(len(pack_filter(f)) - size) <= 8  # the estimate of its bytes is close to the bytes


def test_no_filter_when_its_bytes_cost_more_than_it_gains(blurred) -> None:
    """The same statistics at a tiny rate (the bytes would double it), or an image already right, give no filter."""
    y, x = blurred
    assert fit_filter(filter_stats(y, x), rung_bits=[8], slope_db=3.0) is None
    assert fit_filter(filter_stats(x, x), rung_bits=[1e6], slope_db=3.0) is None


def test_a_filter_must_pay_for_every_rung_that_carries_it(blurred) -> None:
    """A filter whose cost at its own rung is 0.6 of its gain is sent; carried by four more rungs of that size, it is
    not (nor any other shape or precision); the cost adds up over the rungs."""
    stats = filter_stats(*blurred)
    _, gain, size = fit_filter(stats, rung_bits=[1e6], slope_db=3.0)
    rung_bits = 8 * size / (2 ** (0.2 * gain) - 1)  # 3 log2(1 + 8 size / R) = 0.6 gain
    assert filter_cost(size, [rung_bits], 3.0) == pytest.approx(0.6 * gain)
    assert filter_cost(size, [rung_bits, 2 * rung_bits], 3.0) > filter_cost(size, [rung_bits], 3.0)
    assert fit_filter(stats, [rung_bits], slope_db=3.0) is not None
    assert fit_filter(stats, [rung_bits] * 5, slope_db=3.0) is None


def test_filter_bytes_round_trip_and_refuse_damage(blurred) -> None:
    """pack_filter / unpack_filter give back the coefficients; an unknown shape, a cut head, a cut word or a cut
    coder is refused (the chunk's CRC guards the rest)."""
    y, x = blurred
    f = fit_filter(filter_stats(y, x), rung_bits=[1e6], slope_db=1.0)[0]
    data = pack_filter(f)
    got = unpack_filter(data, "test")
    assert (got.shape, got.precision) == (f.shape, f.precision) and np.array_equal(got.coefficients, f.coefficients)
    assert got.coefficients.shape == (3, 3 * len(SHAPES[f.shape]) + 1)
    for bad in (bytes([99]) + data[1:], data[:2], data[:-1], data[:-4]):
        with pytest.raises(BitstreamError, match="test"):
            unpack_filter(bad, "test")


def test_apply_filter_of_zero_coefficients_leaves_the_image() -> None:
    y = _tensor(rgb_pixels(KODIM20))
    zero = RungFilter(2, 7, np.zeros((3, 3 * len(SHAPES[2]) + 1), np.int64))
    assert torch.equal(apply_filter(zero, y), y)


def test_filtered_chunks_wrap_any_step_chunk_and_refuse_damage() -> None:
    """wrap_filtered / unwrap_filtered give back the chunk and the filter's bytes; a plain chunk has none; a wrapping
    that is cut, runs past its chunk, or holds an unknown or filtered coder is refused; wrapping twice is refused."""
    inner = Chunk(CODER_REC_POWER, b"step payload", check=5)
    wrapped = wrap_filtered(inner, b"filter")
    assert wrapped.coder == CODER_FILTERED and wrapped.check == 5
    assert unwrap_filtered(wrapped, "c") == (inner, b"filter")
    assert unwrap_filtered(inner, "c") == (inner, None)
    with pytest.raises(BadInputError, match="again"):
        wrap_filtered(wrapped, b"x")
    for payload in (b"", bytes([CODER_FILTERED, 0]), bytes([200, 0]), bytes([CODER_UQ]), bytes([CODER_UQ, 9, 1, 2]),
                    bytes([CODER_UQ, 0x80])):
        with pytest.raises(BitstreamError, match="chunk 3"):
            unwrap_filtered(Chunk(CODER_FILTERED, payload, 0), "chunk 3")


@pytest.fixture(scope="module")
def filtered_files(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, list]:
    """kodim01 coded by the tiny random model with a codec.json that sends any filter that gains (and one that sends
    none): its rungs are far from the image, so every step's filter pays."""
    folder = tmp_path_factory.mktemp("filters")
    entries = {"coder": "rec", "posterior": "gaussian"}
    with_filters = model_with_codec_file(tiny_model, folder / "f", {**entries, "filter_slope": 0.01})
    without = model_with_codec_file(tiny_model, folder / "n", entries)
    result = diffcodec.encode_report(KODIM01, model=with_filters, seed=3)
    return result.data, diffcodec.encode(KODIM01, model=without, seed=3), result.rungs


def test_a_filtered_file_shows_its_rungs_as_the_encoder_measured_them(filtered_files, tiny_model: Path) -> None:
    """Every step chunk carries a filter; the decoder's rungs have the PSNR the encoder reported, above those of the
    same file without filters, whose steps are the same bytes; the unrefined view ignores the filters; the last
    rung is exact."""
    data, plain, reported = filtered_files
    pixels = rgb_pixels(KODIM01)
    chunks, plain_chunks = read_stream(data).chunks, read_stream(plain).chunks
    assert [c.coder for c in chunks[:TINY_STEPS]] == [CODER_FILTERED] * TINY_STEPS
    inner = [unwrap_filtered(c, "")[0] for c in chunks]
    assert [(c.coder, c.payload) for c in inner] == [(c.coder, c.payload) for c in plain_chunks]
    rungs = diffcodec.decode_rungs(data, model=tiny_model)
    plain_rungs = diffcodec.decode_rungs(plain, model=tiny_model)
    for k in range(1, TINY_STEPS + 1):
        shown = diffcodec.psnr(rungs[k].pixels, pixels)
        assert shown == pytest.approx(reported[k].psnr, abs=1e-9)
        assert shown > diffcodec.psnr(plain_rungs[k].pixels, pixels)
    assert np.array_equal(rungs[-1].pixels, pixels)
    for k in (1, TINY_STEPS):
        assert np.array_equal(diffcodec.decode(data, rung=k, recon="unrefined", model=tiny_model),
                              diffcodec.decode(plain, rung=k, recon="unrefined", model=tiny_model))


def test_a_filter_beside_the_lossless_chunk_is_refused(filtered_files, tiny_model: Path) -> None:
    data, _, _ = filtered_files
    stream = read_stream(data)
    chunks = stream.chunks[:-1] + [wrap_filtered(stream.chunks[-1], stream.chunks[0].payload[:8])]
    with pytest.raises(BitstreamError, match="lossless chunk carries a rung filter"):
        diffcodec.decode(write_stream(stream.header, chunks), model=tiny_model)


def test_codec_json_filter_slope_must_be_a_positive_number(tiny_model: Path, tmp_path: Path) -> None:
    for i, bad in enumerate((0, -1.0, "3", True)):
        model = model_with_codec_file(tiny_model, tmp_path / f"m{i}", {"filter_slope": bad})
        with pytest.raises(ModelError, match="filter_slope"):
            diffcodec.encode(rgb_pixels(KODIM20), model=model, seed=1)


def test_info_names_the_steps_that_carry_a_filter(filtered_files, tmp_path: Path) -> None:
    data, plain, _ = filtered_files
    for name, blob, suffix in (("f.dcz", data, " + filter"), ("p.dcz", plain, "")):
        (tmp_path / name).write_bytes(blob)
        doc = strict_json(ok(cli("info", tmp_path / name, "--json")).stdout)
        assert doc["coders"][:TINY_STEPS] == [f"rec-power{suffix}"] * TINY_STEPS


def test_the_default_model_sends_filters_where_they_pay_and_shows_what_it_reported(tmp_path: Path) -> None:
    """On a 256 x 256 photo the default model's encoder wraps some step chunks with their rung's filter (not all: at
    the lowest rungs they cost more than they gain); each rung decodes to the PSNR the encoder reported, and the
    filtered rungs show more than the same rungs of the file its encoder writes without filters."""
    pixels = rgb_pixels(SAMPLE)
    report = diffcodec.encode_report(pixels, seed=0)
    stream = read_stream(report.data)
    wrapped = [c.coder == CODER_FILTERED for c in stream.chunks[:-1]]
    assert any(wrapped) and not all(wrapped)
    unfiltered = tmp_path / "default"
    shutil.copytree(DEFAULT_WEIGHTS.parent, unfiltered)
    entries = json.loads((unfiltered / "codec.json").read_text())
    (unfiltered / "codec.json").write_text(json.dumps({k: v for k, v in entries.items() if k != "filter_slope"}))
    bare = diffcodec.encode(pixels, model=unfiltered, seed=0)
    assert [c.payload for c in codec.split_filters(stream.chunks, stream.header.steps)[0]] == [
        c.payload for c in read_stream(bare).chunks]
    lossy = zip(diffcodec.decode_rungs(report.data)[1:-1], diffcodec.decode_rungs(bare)[1:-1])
    for k, (rung, plain) in enumerate(lossy):
        assert diffcodec.psnr(rung.pixels, pixels) == pytest.approx(report.rungs[k + 1].psnr, abs=1e-9)
        if wrapped[k]:
            assert diffcodec.psnr(rung.pixels, pixels) > diffcodec.psnr(plain.pixels, pixels)
        else:
            assert np.array_equal(rung.pixels, plain.pixels)


def test_a_changed_filter_fails_its_rungs_check(filtered_files, tiny_model: Path) -> None:
    """A filter rewritten (the chunk's CRC recomputed, as a hostile writer would) fails the rung's check: the rung
    before it still decodes."""
    data, _, _ = filtered_files
    stream = read_stream(data)
    inner, raw = unwrap_filtered(stream.chunks[1], "")
    f = unpack_filter(raw, "")
    other = RungFilter(f.shape, f.precision, f.coefficients + 1)
    changed = wrap_filtered(inner, pack_filter(other))  # inner keeps the check the encoder carried over f
    tampered = write_stream(stream.header, [stream.chunks[0], changed, *stream.chunks[2:]])
    assert diffcodec.decode(tampered, rung=1, model=tiny_model).shape == rgb_pixels(KODIM01).shape
    with pytest.raises(BitstreamError, match="rung 2 fails its reconstruction check"):
        diffcodec.decode(tampered, rung=2, model=tiny_model)
