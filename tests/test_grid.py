"""Files that code only the first T of a model's steps (`steps=`, `--steps`, a model's codec.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffcodec
from conftest import KODIM20, TINY_STEPS, rgb_pixels
from diffcodec import BadInputError, ModelError
from diffcodec.bitstream import read_stream
from diffcodec.cli import app
from diffcodec.schedule import time_grid
from diffcodec.zoo import CODEC_FILE


def test_a_shorter_chain_keeps_the_trained_times() -> None:
    """The first T + 1 times of the T'-step grid, bit for bit: the network sees no gamma it was not trained on."""
    assert torch.equal(time_grid(6, 8), torch.tensor([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25]))
    assert torch.equal(time_grid(8), time_grid(8, 8)) and time_grid(8)[-1] == 0


def test_fewer_steps_code_exactly_with_the_same_first_rungs(tiny_model: Path) -> None:
    """steps=T - 1: T + 1 rungs, the last exact, the others those of the full file (same seed)."""
    short = diffcodec.encode(KODIM20, model=tiny_model, seed=3, steps=TINY_STEPS - 1)
    assert read_stream(short).header.steps == TINY_STEPS - 1
    rungs = diffcodec.decode_rungs(short, model=tiny_model)
    assert len(rungs) == TINY_STEPS + 1
    assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM20))
    full = diffcodec.decode_rungs(diffcodec.encode(KODIM20, model=tiny_model, seed=3), model=tiny_model)
    for a, b in zip(rungs[:-1], full):
        assert np.array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("steps", [0, TINY_STEPS + 1])
def test_steps_outside_the_model_are_refused(tiny_model: Path, steps: int) -> None:
    with pytest.raises(BadInputError, match=rf"steps must be in \[1, {TINY_STEPS}\]"):
        diffcodec.encode(KODIM20, model=tiny_model, steps=steps)


def test_codec_json_sets_the_default(tiny_model: Path, tmp_path: Path) -> None:
    """codec.json beside a model file chooses its default step count; a file decodes by its header either way."""
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "model.pt")
    (folder / CODEC_FILE).write_text(json.dumps({"steps": 1}))
    data = diffcodec.encode(KODIM20, model=folder / "model.pt", seed=3)
    assert read_stream(data).header.steps == 1
    assert np.array_equal(diffcodec.decode(data, model=tiny_model), rgb_pixels(KODIM20))  # same weights


@pytest.mark.parametrize("content", ['{"steps": 9}', '{"stepz": 1}', "not json"])
def test_a_bad_codec_json_is_refused(tiny_model: Path, tmp_path: Path, content: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "model.pt")
    (folder / CODEC_FILE).write_text(content)
    with pytest.raises(ModelError, match=CODEC_FILE):
        diffcodec.encode(KODIM20, model=folder / "model.pt")


def test_cli_steps(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.dcz"
    r = CliRunner().invoke(app, ["encode", str(KODIM20), "-o", str(out), "--model", str(tiny_model), "--steps", "2",
                                 "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert read_stream(out.read_bytes()).header.steps == 2
    r = CliRunner().invoke(app, ["encode", str(KODIM20), "-o", str(tmp_path / "b.dcz"), "--model", str(tiny_model),
                                 "--steps", "7"])
    assert r.exit_code == 1 and "steps must be in [1, 3]" in r.output
    assert not (tmp_path / "b.dcz").exists()
