"""The `diffcodec` command (diffcodec/cli.py) through typer's runner, plus a few runs of the real
console script: exact round trips, truncated files, the JSON reports, and one-line errors that
leave no output behind."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

import diffcodec
from diffcodec.bitstream import read_stream
from diffcodec.cli import app

from conftest import (
    KODIM01,
    KODIM08,
    KODIM15,
    KODIM20,
    TINY_NAME,
    TINY_STEPS,
    make_mode_image,
    one_pixel_image,
    rgb_pixels,
)

LOSSLESS = TINY_STEPS + 1


def cli(*args: object) -> Result:
    """Run `diffcodec ARGS` in-process; stdout and stderr are captured apart."""
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="diffcodec")


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None
    return result


def assert_error(result: Result, code: int, *needles: str) -> str:
    """Exit `code`, nothing on stdout, and one line `error: ...` naming the needles (blank lines aside:
    see test_error_is_exactly_one_line_on_stderr)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def png_pixels(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im.convert("RGB"))


@pytest.fixture
def stream_file(tmp_path: Path, stream20: bytes) -> Path:
    """kodim20 coded with the tiny model, as a file."""
    path = tmp_path / "kodim20.dcz"
    path.write_bytes(stream20)
    return path


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [KODIM01, KODIM15, KODIM20, KODIM08, "one-pixel"],
                         ids=lambda p: getattr(p, "stem", p))
def test_encode_decode_round_trip_is_exact(source: Path | str, tmp_path: Path, tiny_model: Path) -> None:
    image = one_pixel_image(tmp_path) if source == "one-pixel" else source
    ok(cli("encode", image, "-o", tmp_path / "x.dcz", "--model", tiny_model, "--seed", 4))
    result = ok(cli("decode", tmp_path / "x.dcz", "-o", tmp_path / "x.png", "--model", tiny_model))
    assert f"rung {LOSSLESS} of {LOSSLESS} (lossless)" in result.stdout
    mode, pixels = png_pixels(tmp_path / "x.png")
    assert mode == "RGB" and np.array_equal(pixels, rgb_pixels(image))


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_original_mode_comes_back_in_the_png(mode: str, tmp_path: Path, tiny_model: Path) -> None:
    image = make_mode_image(tmp_path, mode, KODIM01)
    ok(cli("encode", image, "-o", tmp_path / "x.dcz", "--model", tiny_model, "--seed", 4))
    ok(cli("decode", tmp_path / "x.dcz", "-o", tmp_path / "x.png", "--model", tiny_model))
    with Image.open(tmp_path / "x.png") as out, Image.open(image) as original:
        assert out.mode == mode
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(original.convert("RGB")))
        if mode != "P":
            assert np.array_equal(np.asarray(out), np.asarray(original))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_permissions_of_the_umask(umask: int, tmp_path: Path, tiny_model: Path) -> None:
    """Written through a temporary file, but with the mode a plain open() gives (mkstemp's is 0600)."""
    before = os.umask(umask)
    try:
        ok(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", tiny_model, "--seed", 4))
        ok(cli("decode", tmp_path / "x.dcz", "-o", tmp_path / "x.png", "--model", tiny_model))
    finally:
        os.umask(before)
    for name in ("x.dcz", "x.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_default_output_names_next_to_the_input(tmp_path: Path, tiny_model: Path) -> None:
    image = tmp_path / "photo.png"
    shutil.copy(KODIM20, image)
    ok(cli("encode", image, "--model", tiny_model))
    assert (tmp_path / "photo.dcz").is_file()
    ok(cli("decode", tmp_path / "photo.dcz", "--model", tiny_model))
    assert np.array_equal(png_pixels(tmp_path / "photo.decoded.png")[1], rgb_pixels(KODIM20))


def test_decode_finds_the_model_named_in_the_file(stream_file: Path, models_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFCODEC_WEIGHTS", str(models_dir))
    ok(cli("decode", stream_file, "-o", tmp_path / "x.png"))
    assert np.array_equal(png_pixels(tmp_path / "x.png")[1], rgb_pixels(KODIM20))


# --- rungs and truncated files --------------------------------------------------------------------


@pytest.mark.parametrize("k", range(TINY_STEPS + 2))
def test_truncated_file_decodes_to_its_last_rung(k: int, tmp_path: Path, tiny_model: Path, stream20: bytes,
                                                 stream_file: Path) -> None:
    cut = tmp_path / "cut.dcz"
    cut.write_bytes(stream20[: read_stream(stream20).rung_bytes(k)])
    expected = diffcodec.decode(stream20, rung=k, model=tiny_model)
    result = ok(cli("decode", cut, "-o", tmp_path / "a.png", "--model", tiny_model))
    assert f"rung {k} of {LOSSLESS}" in result.stdout
    ok(cli("decode", stream_file, "-o", tmp_path / "b.png", "--model", tiny_model, "--rung", k))
    for name in ("a.png", "b.png"):
        mode, pixels = png_pixels(tmp_path / name)
        assert mode == "RGB" and np.array_equal(pixels, expected)


def test_truncated_file_with_rung(tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    cut = tmp_path / "cut.dcz"
    cut.write_bytes(stream20[: read_stream(stream20).rung_bytes(3) + 5])  # 5 bytes into chunk 3
    for k in range(4):
        ok(cli("decode", cut, "-o", tmp_path / f"{k}.png", "--model", tiny_model, "--rung", k))
        assert np.array_equal(png_pixels(tmp_path / f"{k}.png")[1],
                              diffcodec.decode(stream20, rung=k, model=tiny_model))


@pytest.mark.parametrize("recon", ["denoise", "flow", "ancestral", "ensemble"])
def test_recon_option(recon: str, stream_file: Path, tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    result = ok(cli("decode", stream_file, "-o", tmp_path / "x.png", "--model", tiny_model, "--rung", 2,
                    "--recon", recon))
    assert recon in result.stdout
    expected = diffcodec.decode(stream20, rung=2, recon=recon, model=tiny_model)
    assert np.array_equal(png_pixels(tmp_path / "x.png")[1], expected)
    ok(cli("decode", stream_file, "-o", tmp_path / "y.png", "--model", tiny_model, "--recon", recon))
    assert np.array_equal(png_pixels(tmp_path / "y.png")[1], rgb_pixels(KODIM20))


def test_all_rungs(stream_file: Path, tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    folder = tmp_path / "rungs"
    ok(cli("decode", stream_file, "-o", tmp_path / "x.png", "--model", tiny_model, "--all-rungs", folder))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"rung_{k:02d}.png" for k in range(TINY_STEPS + 2)]
    for r in diffcodec.decode_rungs(stream20, model=tiny_model):
        assert np.array_equal(png_pixels(folder / f"rung_{r.rung:02d}.png")[1], r.pixels)
    assert np.array_equal(png_pixels(folder / f"rung_{LOSSLESS:02d}.png")[1], rgb_pixels(KODIM20))


# --- JSON reports -------------------------------------------------------------------------------------


def strict_json(text: str) -> object:
    """Parse one JSON object, refusing the non-standard NaN / Infinity tokens."""
    def refuse(token: str) -> object:
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_encode_json_has_the_documented_keys(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "x.dcz"
    result = ok(cli("encode", KODIM20, "-o", out, "--model", tiny_model, "--seed", 7, "--json"))
    assert result.stderr == ""  # no progress bar with --json
    doc = strict_json(result.stdout)
    assert set(doc) == {"bytes", "bpp", "ideal_bits", "nelbo_bits", "seconds", "rungs"}
    assert set(doc["seconds"]) == {"network", "tables", "coder", "rec", "context", "total"}
    assert all(isinstance(v, float) and v >= 0 for v in doc["seconds"].values())
    assert doc["bytes"] == out.stat().st_size
    assert doc["bpp"] == pytest.approx(doc["bytes"] * 8 / (37 * 53))
    rungs = doc["rungs"]
    assert [r["rung"] for r in rungs] == list(range(TINY_STEPS + 2))
    for r in rungs:
        assert set(r) == {"rung", "bytes", "cum_bytes", "bpp", "psnr", "ideal_bits", "kl_bits"}
    stream = read_stream(out.read_bytes())
    assert [r["cum_bytes"] for r in rungs] == [stream.rung_bytes(k) for k in range(TINY_STEPS + 2)]
    assert rungs[-1]["cum_bytes"] == doc["bytes"]
    assert rungs[-1]["psnr"] == "inf"
    assert all(isinstance(r["psnr"], float) and math.isfinite(r["psnr"]) for r in rungs[:-1])
    assert doc["ideal_bits"] == pytest.approx(sum(r["ideal_bits"] for r in rungs))
    for r, chunk in zip(rungs[1:], stream.chunks):
        assert abs(8 * len(chunk.payload) - r["ideal_bits"]) <= 0.001 * r["ideal_bits"] + 64


def test_encode_text_report(tmp_path: Path, tiny_model: Path) -> None:
    result = ok(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", tiny_model))
    size = (tmp_path / "x.dcz").stat().st_size
    assert f"{size} bytes" in result.stdout and "lossless" in result.stdout
    assert "inf" in result.stdout.splitlines()[-1]


def test_encode_overlap_writes_the_same_file(tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    ok(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", tiny_model, "--seed", 7, "--overlap"))
    assert (tmp_path / "x.dcz").read_bytes() == stream20


def test_info_json_full_file(stream_file: Path, tiny_model: Path, stream20: bytes) -> None:
    doc = strict_json(ok(cli("info", stream_file, "--json")).stdout)
    stream = read_stream(stream20)
    assert doc["model"] == TINY_NAME
    assert doc["weights_hash"] == stream.header.weights_hash.hex() and len(doc["weights_hash"]) == 16
    assert (doc["height"], doc["width"], doc["mode"], doc["seed"], doc["steps"]) == (37, 53, "RGB", 7, TINY_STEPS)
    assert doc["rungs_present"] == doc["rungs_total"] == TINY_STEPS + 1
    assert doc["complete"] is True and doc["trailing_bytes"] == 0
    assert doc["coders"] == ["uq"] * (TINY_STEPS + 1)
    assert [r["cum_bytes"] for r in doc["rungs"]] == [stream.rung_bytes(k) for k in range(TINY_STEPS + 2)]


@pytest.mark.parametrize("k, extra", [(0, 0), (2, 0), (2, 5), (TINY_STEPS, 1)])
def test_info_json_truncated_file(k: int, extra: int, tmp_path: Path, stream20: bytes) -> None:
    cut = tmp_path / "cut.dcz"
    cut.write_bytes(stream20[: read_stream(stream20).rung_bytes(k) + extra])
    doc = strict_json(ok(cli("info", cut, "--json")).stdout)
    assert doc["rungs_present"] == k and doc["rungs_total"] == TINY_STEPS + 1
    assert doc["complete"] is False and doc["trailing_bytes"] == extra
    assert [r["rung"] for r in doc["rungs"]] == list(range(k + 1))


def test_info_text(stream_file: Path, tmp_path: Path, stream20: bytes) -> None:
    full = ok(cli("info", stream_file)).stdout
    assert "53x37 RGB" in full and TINY_NAME in full
    assert f"{TINY_STEPS + 1} of {TINY_STEPS + 1} chunks, complete" in full
    assert [line.split()[-1] for line in full.splitlines()[3:]] == ["-"] + ["uq"] * (TINY_STEPS + 1)  # coders
    cut = tmp_path / "cut.dcz"
    cut.write_bytes(stream20[: read_stream(stream20).rung_bytes(2) + 5])
    text = ok(cli("info", cut)).stdout
    assert f"2 of {TINY_STEPS + 1} chunks, truncated" in text and "5 trailing bytes" in text


# --- errors: one line, an exit code, and no output left behind -------------------------------------------


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    return path


# Encoder refusals (missing, not an image, directory, alpha, 16-bit, CMYK, ...): tests/test_hostile.py.


def truncated_header(tmp_path: Path, stream20: bytes) -> Path:
    path = tmp_path / "cut.dcz"
    path.write_bytes(stream20[:10])
    return path


def png_as_stream(tmp_path: Path, stream20: bytes) -> Path:
    path = tmp_path / "photo.dcz"
    shutil.copy(KODIM20, path)
    return path


def flipped_bit(tmp_path: Path, stream20: bytes) -> Path:
    bad = bytearray(stream20)
    span = read_stream(stream20).spans[2]
    bad[span.offset + 20] ^= 0x80
    path = tmp_path / "flipped.dcz"
    path.write_bytes(bytes(bad))
    return path


DECODE_ERRORS: dict[str, tuple[Callable[[Path, bytes], Path], tuple[str, ...]]] = {
    "missing": (lambda d, s: d / "missing.dcz", ("missing.dcz", "no such file")),
    "directory": (lambda d, s: d, ("directory",)),
    "png": (lambda d, s: Path(shutil.copy(KODIM20, d / "kodim20.png")), ("not a diffcodec file",)),
    "png-named-dcz": (png_as_stream, ("not a diffcodec file",)),
    "text": (lambda d, s: text_file(d), ("not a diffcodec file",)),
    "truncated-header": (truncated_header, ("truncated header",)),
    "flipped-bit": (flipped_bit, ("chunk 2", "checksum")),
}


@pytest.mark.parametrize("case", DECODE_ERRORS)
def test_decode_refuses_bad_streams(case: str, tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    make, needles = DECODE_ERRORS[case]
    work = tmp_path / "work"
    work.mkdir()
    stream = make(work, stream20)
    before = listing(work)
    assert_error(cli("decode", stream, "-o", work / "out.png", "--model", tiny_model), 1, *needles)
    assert listing(work) == before


@pytest.mark.parametrize("case", ["missing", "png", "truncated-header"])
def test_info_refuses_bad_streams(case: str, tmp_path: Path, stream20: bytes) -> None:
    make, needles = DECODE_ERRORS[case]
    assert_error(cli("info", make(tmp_path, stream20)), 1, *needles)
    assert_error(cli("info", make(tmp_path, stream20), "--json"), 1, *needles)


def test_decode_with_the_wrong_model(stream_file: Path, other_model: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    line = assert_error(cli("decode", stream_file, "-o", tmp_path / "out.png", "--model", other_model), 1,
                        TINY_NAME, "--model")
    assert str(other_model) in line
    assert listing(tmp_path) == before


def test_decode_with_a_model_that_is_not_installed(stream_file: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFCODEC_WEIGHTS", raising=False)
    before = listing(tmp_path)
    assert_error(cli("decode", stream_file, "-o", tmp_path / "out.png"), 1, TINY_NAME, "not found")
    assert listing(tmp_path) == before


def test_encode_with_an_unknown_model(tmp_path: Path) -> None:
    assert_error(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", "no-such-model"), 1, "no-such-model")
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("cut_at", [None, 2])
def test_rung_beyond_the_file(cut_at: int | None, tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    """--rung past the last chunk present: exit 1, naming the rungs the file holds."""
    data = stream20 if cut_at is None else stream20[: read_stream(stream20).rung_bytes(cut_at)]
    present = TINY_STEPS + 1 if cut_at is None else cut_at
    path = tmp_path / "in.dcz"
    path.write_bytes(data)
    assert_error(cli("decode", path, "-o", tmp_path / "out.png", "--model", tiny_model, "--rung", present + 1), 1,
                 f"rungs 0 to {present}")
    assert listing(tmp_path) == {"in.dcz"}


@pytest.mark.parametrize(
    "args, option",
    [(["--recon", "sharpest"], "--recon"), (["--bogus"], "--bogus"), (["--rung", "-1"], "--rung"),
     (["--rung", "two"], "--rung")],
    ids=["bad-recon", "unknown-option", "negative-rung", "non-integer-rung"],
)
def test_usage_errors_exit_2(args: list[str], option: str, stream_file: Path, tmp_path: Path,
                             tiny_model: Path) -> None:
    before = listing(tmp_path)
    result = cli("decode", stream_file, "-o", tmp_path / "out.png", "--model", tiny_model, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output and option in result.stderr
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "args",
    [["encode", KODIM20, "--seed", "-3"], ["encode", KODIM20, "--nope"], ["encode"], [], ["frobnicate"]],
    ids=["negative-seed", "unknown-option", "missing-image", "no-command", "unknown-command"],
)
def test_other_usage_errors_exit_2(args: list[object], tmp_path: Path, tiny_model: Path) -> None:
    result = cli(*args, *(["-o", tmp_path / "x.dcz", "--model", tiny_model] if len(args) > 1 else []))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert listing(tmp_path) == set()


def test_output_exists_needs_force(tmp_path: Path, tiny_model: Path, stream_file: Path) -> None:
    out = tmp_path / "x.dcz"
    out.write_bytes(b"precious")
    assert_error(cli("encode", KODIM20, "-o", out, "--model", tiny_model), 1, "exists", "--force")
    assert out.read_bytes() == b"precious"
    ok(cli("encode", KODIM20, "-o", out, "--model", tiny_model, "--force"))
    assert read_stream(out.read_bytes()).complete

    png = tmp_path / "x.png"
    png.write_bytes(b"precious")
    assert_error(cli("decode", stream_file, "-o", png, "--model", tiny_model), 1, "exists", "--force")
    assert png.read_bytes() == b"precious"
    ok(cli("decode", stream_file, "-o", png, "--model", tiny_model, "-f"))
    assert np.array_equal(png_pixels(png)[1], rgb_pixels(KODIM20))


def test_output_folder_missing(tmp_path: Path, tiny_model: Path, stream_file: Path) -> None:
    assert_error(cli("encode", KODIM20, "-o", tmp_path / "nowhere" / "x.dcz", "--model", tiny_model), 1,
                 "no such directory")
    assert_error(cli("decode", stream_file, "-o", tmp_path / "nowhere" / "x.png", "--model", tiny_model), 1,
                 "no such directory")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", ["encode-missing-input", "decode-wrong-model"])
def test_error_is_exactly_one_line_on_stderr(command: str, tmp_path: Path, tiny_model: Path, other_model: Path,
                                             stream_file: Path) -> None:
    if command == "encode-missing-input":
        result = cli("encode", tmp_path / "missing.png", "-o", tmp_path / "x.dcz", "--model", tiny_model)
    else:
        result = cli("decode", stream_file, "-o", tmp_path / "x.png", "--model", other_model)
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), repr(result.stderr)


def test_model_file_that_is_not_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_text("import os\n")  # e.g. a script, or a pickled training checkpoint
    assert_error(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", model), 1,
                 "not a diffcodec model file")


@pytest.mark.parametrize("command", ["encode", "decode"])
@pytest.mark.parametrize("target", ["existing-directory", "under-a-file"])
def test_unwritable_output_is_a_one_line_error(command: str, target: str, tmp_path: Path, tiny_model: Path,
                                               stream_file: Path) -> None:
    if target == "existing-directory":
        out, extra = tmp_path / "folder", ["--force"]
        out.mkdir()
    else:
        out, extra = stream_file / "x.out", []  # the "folder" is a file
    source = KODIM20 if command == "encode" else stream_file
    assert_error(cli(command, source, "-o", out, "--model", tiny_model, *extra), 1)


def test_debug_variable_lets_the_exception_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFCODEC_DEBUG", "1")
    result = cli("decode", KODIM20, "-o", tmp_path / "x.png")
    assert isinstance(result.exception, diffcodec.BitstreamError)


# --- the installed console script -----------------------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("diffcodec")
needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="the diffcodec console script is not installed")


@needs_script
def test_console_script_encodes_a_file_this_process_decodes(tmp_path: Path, tiny_model: Path) -> None:
    """The real entry point, with the default thread count: its file decodes exactly here (one thread)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = tmp_path / "x.dcz"
    proc = subprocess.run([SCRIPT, "encode", KODIM01, "-o", out, "--model", tiny_model, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bytes"] == out.stat().st_size
    assert np.array_equal(diffcodec.decode(out.read_bytes(), model=tiny_model), rgb_pixels(KODIM01))


@needs_script
def test_console_script_error(tmp_path: Path) -> None:
    proc = subprocess.run([SCRIPT, "decode", KODIM20, "-o", tmp_path / "x.png"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: not a")
    assert listing(tmp_path) == set()


def test_device_auto_round_trips_and_missing_cuda_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    image = Path(__file__).parent / "data" / "kodim20_53x37.png"
    ok(cli("encode", image, "-o", tmp_path / "x.dcz", "--model", tiny_model, "--seed", 4, "--device", "auto"))
    ok(cli("decode", tmp_path / "x.dcz", "-o", tmp_path / "x.png", "--model", tiny_model, "--device", "auto"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")),
                          np.asarray(Image.open(image).convert("RGB")))
    if not torch.cuda.is_available():
        assert_error(cli("encode", image, "-o", tmp_path / "y.dcz", "--model", tiny_model, "--device", "cuda"),
                     1, "no CUDA device")
        assert not (tmp_path / "y.dcz").exists()
    assert_error(cli("decode", tmp_path / "x.dcz", "-o", tmp_path / "z.png", "--device", "tpu"), 1, "unknown device")
