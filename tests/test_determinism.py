"""Encoder and decoder must compute the same pixels at every rung; when they cannot (another machine,
thread count or torch version), the per-rung reconstruction checks of the container turn it into an
error. Never a wrong image."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import diffcodec
from diffcodec import BitstreamError, ReconstructionCheckError
from diffcodec.bitstream import read_stream, rung_check, write_stream
from diffcodec.codec import RECONS, iter_rungs
from diffcodec.uqdm import UQDM

from conftest import DEFAULT_WEIGHTS, KODIM01, KODIM20, ROOT, TINY_STEPS, rgb_pixels


def with_check(data: bytes, rung: int, check: int) -> bytes:
    """The same stream with rung `rung`'s stored check replaced (valid CRCs: only the codec can tell)."""
    s = read_stream(data)
    if rung == 0:
        return write_stream(replace(s.header, check=check), s.chunks)
    chunks = list(s.chunks)
    chunks[rung - 1] = replace(chunks[rung - 1], check=check)
    return write_stream(s.header, chunks)


def test_checks_are_those_of_the_pixels_the_decoder_shows(tiny_model: Path, stream20: bytes) -> None:
    s = read_stream(stream20)
    rungs = diffcodec.decode_rungs(stream20, model=tiny_model)
    stored = [s.header.check] + [c.check for c in s.chunks]
    assert stored == [rung_check(r.pixels.tobytes()) for r in rungs]
    assert stored[-1] == rung_check(rgb_pixels(KODIM20).tobytes())  # the lossless rung: the original


@pytest.mark.parametrize("rung", range(TINY_STEPS + 2))
@pytest.mark.parametrize("recon", RECONS)
def test_a_rung_whose_check_differs_is_refused(rung: int, recon: str, tiny_model: Path, stream20: bytes) -> None:
    bad = with_check(stream20, rung, read_stream(stream20).header.check ^ 0x1 if rung == 0 else 12345)
    shown = [r.rung for r in _until_error(iter_rungs(bad, recon, model=tiny_model))]
    assert shown == list(range(rung))  # every rung before it is shown, that one is refused
    with pytest.raises(ReconstructionCheckError, match=f"rung {rung} fails its reconstruction check") as refused:
        diffcodec.decode(bad, model=tiny_model, recon=recon)
    assert refused.value.rung == rung and isinstance(refused.value, BitstreamError)
    if rung > 0:  # a lower rung does not need the bad check
        assert np.array_equal(diffcodec.decode(bad, rung - 1, model=tiny_model, recon=recon),
                              diffcodec.decode(stream20, rung - 1, model=tiny_model, recon=recon))


def _until_error(rungs: object) -> list[diffcodec.Rung]:
    out = []
    with pytest.raises(BitstreamError, match="fails its reconstruction check"):
        for r in rungs:  # type: ignore[attr-defined]
            out.append(r)
    return out


@pytest.mark.parametrize("noise", [1e-7, 1e-4, 1e-1])
def test_a_decoder_with_other_floats_never_gives_a_wrong_image(noise: float, monkeypatch: pytest.MonkeyPatch,
                                                             tiny_model: Path, stream20: bytes) -> None:
    """Perturb the decoder's network outputs (as another machine might): every rung it shows is the
    encoder's, and the first rung that differs is refused."""
    expected = diffcodec.decode_rungs(stream20, model=tiny_model)
    predict = UQDM.predict
    gen = torch.Generator().manual_seed(0)

    def other_machine(self: UQDM, z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps_hat, s_hat = predict(self, z, gamma)
        return eps_hat + noise * torch.randn(eps_hat.shape, generator=gen), s_hat

    monkeypatch.setattr(UQDM, "predict", other_machine)
    shown: list[diffcodec.Rung] = []
    try:
        for r in iter_rungs(stream20, model=tiny_model):
            shown.append(r)
    except ReconstructionCheckError as e:
        assert e.rung == len(shown) and f"rung {len(shown)} fails its reconstruction check" in str(e)
    assert all(np.array_equal(r.pixels, e.pixels) for r, e in zip(shown, expected))
    if noise >= 1e-1:
        assert len(shown) < len(expected)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no trained model in weights/default/model.pt")
def test_encode_one_thread_decode_two_threads_in_other_processes(tmp_path: Path) -> None:
    """Encode in a process with 1 torch thread, decode every rung in another with 2: same pixels, every
    check passes. The trained model (not the tiny one) is where thread counts change the convolutions."""
    script = (
        "import sys, torch, numpy as np, diffcodec\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "if sys.argv[2] == 'encode':\n"
        "    open(sys.argv[3], 'wb').write(diffcodec.encode(sys.argv[4], model='default', seed=5))\n"
        "else:\n"
        "    rungs = diffcodec.decode_rungs(open(sys.argv[3], 'rb').read(), model='default')\n"
        "    np.save(sys.argv[4], np.stack([r.pixels for r in rungs]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    stream, decoded = tmp_path / "crop.dcz", tmp_path / "rungs.npy"

    def run(*args: str) -> None:
        subprocess.run([sys.executable, "-c", script, *args], check=True, env=env, timeout=300)

    run("1", "encode", str(stream), str(KODIM01))  # 64 x 64 (a 48 x 48 crop happens to agree)
    run("2", "decode", str(stream), str(decoded))
    in_process = diffcodec.decode_rungs(stream.read_bytes(), model="default")  # this process: 1 thread
    pixels = np.load(decoded)
    assert len(pixels) == read_stream(stream.read_bytes()).header.steps + 2
    assert all(np.array_equal(p, r.pixels) for p, r in zip(pixels, in_process))
    assert np.array_equal(pixels[-1], rgb_pixels(KODIM01))


def test_the_codec_leaves_the_callers_thread_count_alone(tiny_model: Path, stream20: bytes) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        diffcodec.decode(stream20, model=tiny_model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no trained model in weights/default/model.pt")
def test_overlapped_encode_at_two_threads_writes_the_serial_one_thread_bytes() -> None:
    """The coding worker and the network share the process's thread count: at 2 caller threads neither may
    run with 2 (the trained model's convolutions would change) nor leave the caller's count changed."""
    serial = diffcodec.encode(KODIM01, model="default", seed=5)  # this process: 1 thread
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        overlapped = diffcodec.encode(KODIM01, model="default", seed=5, overlap=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert overlapped == serial


def test_a_thread_started_inside_one_thread_runs_one_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from diffcodec.determinism import one_thread

    def inside() -> tuple[int, int]:
        with one_thread():
            return torch.get_num_threads(), int(torch.ones(4).sum())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread(), ThreadPoolExecutor(1) as pool:
            assert pool.submit(inside).result() == (1, 4)
            assert torch.get_num_threads() == 1  # the worker's one_thread left this thread's count alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
