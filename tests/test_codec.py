"""Behaviour of the codec API (diffcodec/codec.py): exact round trips, the rung ladder, truncation,
encoder/decoder agreement, and refusal of corrupt streams and wrong models."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffcodec
from diffcodec import BadInputError, BitstreamError, ModelError
from diffcodec.bitstream import CHUNK_FRAME_SIZE, CODER_REC, Chunk, read_stream, write_stream
from diffcodec.codec import RECONS, iter_rungs, open_stream, psnr, rung_table

from conftest import (
    DEFAULT_WEIGHTS,
    KODIM01,
    KODIM08,
    KODIM15,
    KODIM20,
    SAMPLE,
    TINY_NAME,
    TINY_STEPS,
    one_pixel_image,
    rgb_pixels,
)

# --- exact round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [KODIM01, KODIM15, KODIM20, KODIM08, SAMPLE], ids=lambda p: p.stem)
def test_lossless_round_trip_real_crops(path: Path, tiny_model: Path, encoded: Callable[[Path], bytes]) -> None:
    data = encoded(path)
    pixels = diffcodec.decode(data, model=tiny_model)
    original = rgb_pixels(path)
    assert pixels.dtype == np.uint8 and pixels.shape == original.shape
    assert np.array_equal(pixels, original)
    h, w = original.shape[:2]
    header = read_stream(data).header
    assert (header.height, header.width, header.mode, header.steps) == (h, w, "RGB", TINY_STEPS)


@pytest.mark.parametrize("height, width", [(1, 7), (7, 1), (2, 3), (17, 1), (5, 5)])
def test_lossless_round_trip_thin_and_tiny_shapes(height: int, width: int, tiny_model: Path) -> None:
    pixels = np.ascontiguousarray(rgb_pixels(KODIM08)[:height, 40 : 40 + width])
    data = diffcodec.encode(pixels, model=tiny_model, seed=1)
    rungs = diffcodec.decode_rungs(data, model=tiny_model)
    assert all(r.pixels.shape == (height, width, 3) for r in rungs)
    assert np.array_equal(rungs[-1].pixels, pixels)


def test_lossless_round_trip_one_pixel(tmp_path: Path, tiny_model: Path) -> None:
    path = one_pixel_image(tmp_path)
    data = diffcodec.encode(path, model=tiny_model, seed=3)
    pixels = diffcodec.decode(data, model=tiny_model)
    assert pixels.shape == (1, 1, 3)
    assert np.array_equal(pixels, rgb_pixels(path))


def test_inputs_as_path_str_pil_and_array_give_the_same_file(tiny_model: Path) -> None:
    from PIL import Image

    pixels = rgb_pixels(KODIM20)
    with Image.open(KODIM20) as im:
        im.load()
        files = {diffcodec.encode(src, model=tiny_model, seed=11) for src in (KODIM20, str(KODIM20), im, pixels)}
    assert len(files) == 1
    assert np.array_equal(diffcodec.decode(files.pop(), model=tiny_model), pixels)


@pytest.mark.parametrize("path", [KODIM20, KODIM08, SAMPLE], ids=lambda p: p.stem)
def test_overlapped_encode_writes_the_serial_bytes(path: Path, tiny_model: Path,
                                                   encoded: Callable[[Path], bytes]) -> None:
    report = diffcodec.encode_report(path, model=tiny_model, seed=7, overlap=True)
    assert report.data == encoded(path)
    assert report.seconds["tables"] > 0 and report.seconds["coder"] > 0  # the worker's clocks are added up
    hybrid = diffcodec.encode(path, model=tiny_model, seed=7, coder="hybrid", posterior="gaussian")
    assert diffcodec.encode(path, model=tiny_model, seed=7, coder="hybrid", posterior="gaussian",
                            overlap=True) == hybrid  # REC steps stay serial, the UQ steps overlap


def test_same_seed_same_bytes_and_random_seed_by_default(tiny_model: Path, stream20: bytes) -> None:
    assert diffcodec.encode(KODIM20, model=tiny_model, seed=7) == stream20
    a = diffcodec.encode(KODIM20, model=tiny_model)
    b = diffcodec.encode(KODIM20, model=tiny_model)
    assert read_stream(a).header.seed != read_stream(b).header.seed
    for data in (a, b):
        assert np.array_equal(diffcodec.decode(data, model=tiny_model), rgb_pixels(KODIM20))


@pytest.mark.parametrize("seed", [0, 2**63, 2**64 - 1])
def test_seeds_across_the_header_range_round_trip(seed: int, tiny_model: Path) -> None:
    data = diffcodec.encode(KODIM20, model=tiny_model, seed=seed)
    assert read_stream(data).header.seed == seed
    assert np.array_equal(diffcodec.decode(data, model=tiny_model), rgb_pixels(KODIM20))


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_out_of_range_is_refused(seed: int, tiny_model: Path) -> None:
    with pytest.raises(BadInputError, match="seed"):
        diffcodec.encode(KODIM20, model=tiny_model, seed=seed)


# --- the ladder of rungs ----------------------------------------------------------------------------


def test_every_rung_decodes_and_the_last_is_exact(tiny_model: Path, stream20: bytes) -> None:
    stream = read_stream(stream20)
    rungs = diffcodec.decode_rungs(stream20, model=tiny_model)
    assert [r.rung for r in rungs] == list(range(TINY_STEPS + 2))
    original = rgb_pixels(KODIM20)
    for r in rungs:
        assert r.pixels.shape == original.shape and r.pixels.dtype == np.uint8
        assert r.cum_bytes == stream.rung_bytes(r.rung)
        assert r.bytes == (stream.spans[r.rung - 1].size if r.rung else 0)
        assert r.bpp == pytest.approx(r.cum_bytes * 8 / (37 * 53))
    cum = [r.cum_bytes for r in rungs]
    assert all(a < b for a, b in zip(cum, cum[1:])), cum
    assert cum[-1] == len(stream20)
    assert np.array_equal(rungs[-1].pixels, original)
    assert not np.array_equal(rungs[0].pixels, original)  # rung 0 is a guess from the seed alone


def test_rung_table_matches_the_container(stream20: bytes) -> None:
    stream = read_stream(stream20)
    table = rung_table(stream)
    assert [r.rung for r in table] == list(range(TINY_STEPS + 2))
    assert [r.cum_bytes for r in table] == [stream.rung_bytes(k) for k in range(TINY_STEPS + 2)]
    assert sum(r.bytes for r in table) + stream.header_size == len(stream20)


def test_iter_rungs_yields_lazily_from_rung_zero(tiny_model: Path, stream20: bytes) -> None:
    it = iter_rungs(stream20, model=tiny_model)
    first = next(it)
    assert first.rung == 0 and first.pixels.shape == (37, 53, 3)
    assert [r.rung for r in it] == list(range(1, TINY_STEPS + 2))


@pytest.mark.parametrize("k", range(TINY_STEPS + 2))
def test_file_cut_at_chunk_boundary_decodes_like_rung_k(k: int, tiny_model: Path, stream20: bytes) -> None:
    """decode(data[:rung_bytes(k)]) == decode(data, rung=k), and cutting inside the next chunk
    changes nothing."""
    cut = read_stream(stream20).rung_bytes(k)
    expected = diffcodec.decode(stream20, rung=k, model=tiny_model)
    assert np.array_equal(diffcodec.decode(stream20[:cut], model=tiny_model), expected)
    assert [r.rung for r in diffcodec.decode_rungs(stream20[:cut], model=tiny_model)] == list(range(k + 1))
    if cut < len(stream20):
        mid = cut + CHUNK_FRAME_SIZE + 3  # inside the payload of chunk k
        assert np.array_equal(diffcodec.decode(stream20[:mid], model=tiny_model), expected)
    if k <= TINY_STEPS:
        assert not np.array_equal(expected, rgb_pixels(KODIM20))


def test_truncated_file_with_lower_rung(tiny_model: Path, stream20: bytes) -> None:
    cut = stream20[: read_stream(stream20).rung_bytes(3)]
    for k in range(4):
        assert np.array_equal(diffcodec.decode(cut, rung=k, model=tiny_model),
                              diffcodec.decode(stream20, rung=k, model=tiny_model))


@pytest.mark.parametrize("rung", [-1, TINY_STEPS + 2, 99])
def test_rung_beyond_the_file_is_refused(rung: int, tiny_model: Path, stream20: bytes) -> None:
    with pytest.raises(BadInputError, match=f"rungs 0 to {TINY_STEPS + 1}"):
        diffcodec.decode(stream20, rung=rung, model=tiny_model)


def test_rung_beyond_a_truncated_file_names_the_rungs_present(tiny_model: Path, stream20: bytes) -> None:
    cut = stream20[: read_stream(stream20).rung_bytes(2)]
    with pytest.raises(BadInputError, match="rungs 0 to 2"):
        diffcodec.decode(cut, rung=3, model=tiny_model)


@pytest.mark.parametrize("recon", RECONS)
def test_each_reconstruction_decodes_every_rung(recon: str, tiny_model: Path, stream20: bytes) -> None:
    rungs = diffcodec.decode_rungs(stream20, recon=recon, model=tiny_model)
    assert [r.rung for r in rungs] == list(range(TINY_STEPS + 2))
    assert all(r.pixels.shape == (37, 53, 3) and r.pixels.dtype == np.uint8 for r in rungs)
    assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM20))
    # the decoder's randomness comes from the seed in the file: decoding again gives the same images
    again = diffcodec.decode_rungs(stream20, recon=recon, model=tiny_model)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(rungs, again))


def test_the_ensemble_shows_every_lossy_rung_of_a_photo_closer_than_denoise() -> None:
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[:96, :128])
    data = diffcodec.encode(pixels, seed=0)  # the default model, with its post-filter
    denoised, ensemble = (diffcodec.decode_rungs(data, recon=recon) for recon in ("denoise", "ensemble"))
    assert np.array_equal(ensemble[-1].pixels, pixels)
    for d, e in zip(denoised[:-1], ensemble[:-1]):
        assert psnr(e.pixels, pixels) > psnr(d.pixels, pixels)  # measured: +0.01 to +0.43 dB


def test_unknown_reconstruction_is_refused(tiny_model: Path, stream20: bytes) -> None:
    with pytest.raises(BadInputError, match="denoise, unrefined, flow, ancestral, ensemble"):
        diffcodec.decode(stream20, recon="sharpest", model=tiny_model)


def test_progress_reports_every_network_call(tiny_model: Path, stream20: bytes) -> None:
    calls: list[tuple[int, int]] = []
    diffcodec.encode(KODIM20, model=tiny_model, seed=7, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, TINY_STEPS + 1) for i in range(1, TINY_STEPS + 2)]
    calls.clear()
    diffcodec.decode(stream20, model=tiny_model, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (TINY_STEPS + 1, TINY_STEPS + 1)
    # a lossy rung: the steps up to it, and the calls its reconstruction makes (three more flips; the steps after it)
    for recon, extra in [("denoise", 0), ("ensemble", 3), ("flow", TINY_STEPS - 1)]:
        calls.clear()
        diffcodec.decode(stream20, rung=1, recon=recon, model=tiny_model,
                         progress=lambda done, total: calls.append((done, total)))
        assert calls == [(i, 2 + extra) for i in range(1, 3 + extra)]


# --- the encoder's report: estimated bits vs real bytes, encoder vs decoder ---------------------------


@pytest.fixture(scope="module")
def report20(tiny_model: Path) -> diffcodec.EncodeResult:
    return diffcodec.encode_report(KODIM20, model=tiny_model, seed=7)


def test_report_data_is_the_encoded_file(report20: diffcodec.EncodeResult, stream20: bytes) -> None:
    assert report20.data == stream20


def test_ideal_bits_match_the_coder_bytes(report20: diffcodec.EncodeResult) -> None:
    stream = read_stream(report20.data)
    assert len(report20.rungs) == len(stream.chunks) + 1 == TINY_STEPS + 2
    assert report20.rungs[0].ideal_bits == 0.0
    for r, chunk in zip(report20.rungs[1:], stream.chunks):
        actual = 8 * len(chunk.payload)
        assert abs(actual - r.ideal_bits) <= 0.001 * r.ideal_bits + 64, (r.rung, actual, r.ideal_bits)
    assert report20.ideal_bits == pytest.approx(sum(r.ideal_bits for r in report20.rungs))
    assert math.isfinite(report20.nelbo_bits) and report20.nelbo_bits > 0
    assert report20.bpp == pytest.approx(len(report20.data) * 8 / (37 * 53))
    assert set(report20.seconds) == {"network", "tables", "coder", "rec", "context", "total"}


def test_report_rungs_match_the_container(report20: diffcodec.EncodeResult) -> None:
    stream = read_stream(report20.data)
    assert [r.cum_bytes for r in report20.rungs] == [stream.rung_bytes(k) for k in range(TINY_STEPS + 2)]


def test_encoder_and_decoder_agree_on_every_rung(report20: diffcodec.EncodeResult, tiny_model: Path) -> None:
    """The PSNR the encoder reports is the PSNR of what the decoder shows (denoise), rung by rung."""
    original = rgb_pixels(KODIM20)
    decoded = diffcodec.decode_rungs(report20.data, recon="denoise", model=tiny_model)
    assert [r.psnr for r in report20.rungs] == [diffcodec.psnr(r.pixels, original) for r in decoded]
    assert report20.rungs[-1].psnr == math.inf
    assert all(math.isfinite(r.psnr) for r in report20.rungs[:-1])


def test_psnr() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    assert diffcodec.psnr(a, b) == math.inf
    b[0, 0, 0] = 255  # mse = 255^2 / 12
    assert diffcodec.psnr(a, b) == pytest.approx(10 * math.log10(12))


# --- corrupt streams and wrong models -------------------------------------------------------------


@pytest.mark.parametrize("chunk", range(TINY_STEPS + 1))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_payload_bit_is_an_error_not_a_wrong_image(chunk: int, where: str, tiny_model: Path,
                                                          stream20: bytes) -> None:
    span = read_stream(stream20).spans[chunk]
    start, end = span.offset + CHUNK_FRAME_SIZE, span.end
    at = {"first": start, "middle": (start + end) // 2, "last": end - 1}[where]
    bad = bytearray(stream20)
    bad[at] ^= 0x04
    with pytest.raises(BitstreamError, match=f"chunk {chunk}"):
        diffcodec.decode(bytes(bad), model=tiny_model)
    with pytest.raises(BitstreamError):
        next(iter_rungs(bytes(bad), model=tiny_model))  # refused before the first rung is shown


def test_flipped_header_bit_is_an_error(tiny_model: Path, stream20: bytes) -> None:
    bad = bytearray(stream20)
    bad[20] ^= 0x01  # inside the seed
    with pytest.raises(BitstreamError, match="header checksum"):
        diffcodec.decode(bytes(bad), model=tiny_model)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a diffcodec file"),
        (b"hello world, not an image codec file at all", "not a diffcodec file"),
    ],
    ids=["empty", "png", "text"],
)
def test_not_a_diffcodec_stream(data: bytes, message: str, tiny_model: Path) -> None:
    with pytest.raises(BitstreamError, match=message):
        diffcodec.decode(data, model=tiny_model)


def test_truncated_header(tiny_model: Path, stream20: bytes) -> None:
    for n in (3, 10, read_stream(stream20).header_size - 1):
        with pytest.raises(BitstreamError, match="truncated header"):
            diffcodec.decode(stream20[:n], model=tiny_model)


def test_lossless_chunk_of_the_rec_coder_is_refused(tiny_model: Path, stream20: bytes) -> None:
    stream = read_stream(stream20)
    chunks = list(stream.chunks)
    chunks[-1] = Chunk(CODER_REC, chunks[-1].payload, chunks[-1].check)
    with pytest.raises(BitstreamError, match=f"chunk {TINY_STEPS}: coder 'rec' cannot send the lossless chunk"):
        diffcodec.decode(write_stream(stream.header, chunks), model=tiny_model)


def test_wrong_model_is_refused_naming_both_weights(tiny_model: Path, other_model: Path, stream20: bytes) -> None:
    want = hashlib.sha256(tiny_model.read_bytes()).digest()[:8].hex()
    got = hashlib.sha256(other_model.read_bytes()).digest()[:8].hex()
    assert want != got
    with pytest.raises(ModelError, match="--model") as e:
        diffcodec.decode(stream20, model=other_model)
    assert want in str(e.value) and got in str(e.value)
    with pytest.raises(ModelError):
        open_stream(stream20, model=other_model)


def test_header_names_the_model_and_its_weights(tiny_model: Path, stream20: bytes) -> None:
    header = read_stream(stream20).header
    assert header.model_name == TINY_NAME
    assert header.weights_hash == hashlib.sha256(tiny_model.read_bytes()).digest()[:8]


def test_decoder_finds_the_model_named_in_the_header(models_dir: Path, tiny_model: Path, stream20: bytes,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFCODEC_WEIGHTS", raising=False)
    with pytest.raises(ModelError, match=f"{TINY_NAME}.*not found"):
        diffcodec.decode(stream20)
    monkeypatch.setenv("DIFFCODEC_WEIGHTS", str(models_dir))
    assert np.array_equal(diffcodec.decode(stream20), rgb_pixels(KODIM20))
    assert diffcodec.encode(KODIM20, model=TINY_NAME, seed=7) == stream20  # by name or by path: one file


def test_unknown_model_name_is_refused() -> None:
    with pytest.raises(ModelError, match="no-such-model"):
        diffcodec.encode(KODIM20, model="no-such-model")


@pytest.mark.parametrize("content", [b"hello", b"import os\n"], ids=["bytes", "python-source"])
def test_a_file_that_is_not_a_model_is_refused(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a diffcodec model file"):
        diffcodec.encode(KODIM20, model=path)


# --- the trained model ---------------------------------------------------------------------------------


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no trained model in weights/default/model.pt yet")
def test_default_model_round_trip_compresses() -> None:
    data = diffcodec.encode(KODIM01, model="default", seed=0)
    assert np.array_equal(diffcodec.decode(data), rgb_pixels(KODIM01))
    bits_per_subpixel = 8 * len(data) / (64 * 64 * 3)
    assert bits_per_subpixel < 8, bits_per_subpixel


def test_decoder_finds_the_weights_under_another_name(models_dir: Path, other_model: Path, stream20: bytes,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model retrained under the same name: the file's weights are found under the name they were moved to."""
    weights = tmp_path / "weights"
    (weights / TINY_NAME).mkdir(parents=True)
    (weights / TINY_NAME / "model.pt").write_bytes(other_model.read_bytes())  # the name now holds other weights
    (weights / "old").mkdir()
    (weights / "old" / "model.pt").write_bytes((models_dir / TINY_NAME / "model.pt").read_bytes())
    monkeypatch.setenv("DIFFCODEC_WEIGHTS", str(weights))
    assert np.array_equal(diffcodec.decode(stream20), rgb_pixels(KODIM20))
    (weights / "old" / "model.pt").unlink()  # nowhere to be found: refused, naming both weights
    with pytest.raises(ModelError, match="--model"):
        diffcodec.decode(stream20)
