"""An early-ending time grid (grid_steps > steps): a prefix of the trained times, coded exactly to the last rung."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import diffcodec
from conftest import KODIM20, ROOT, TINY_STEPS, rgb_pixels
from diffcodec.schedule import time_grid
from diffcodec.zoo import load_file


def test_prefix_grid_is_bit_identical() -> None:
    """grid_steps T' > T gives the first T + 1 times of the T'-step grid, ending above 0."""
    assert torch.equal(time_grid(6, 8), torch.tensor([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25]))
    assert torch.equal(time_grid(8), time_grid(8, 8)) and time_grid(8)[-1] == 0


def regrid(model: Path, steps: int, out: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "tools" / "regrid.py"), str(model), "--steps", str(steps),
                    "--out", str(out)], check=True, capture_output=True)
    return out


def test_regridded_model_codes_exactly(tiny_model: Path, tmp_path: Path) -> None:
    """tools/regrid.py keeps the weights and the first T gammas; the file has T + 2 rungs and the last is exact,
    and the shared rungs are those of the full model."""
    short = regrid(tiny_model, TINY_STEPS - 1, tmp_path / "short" / "model.pt")
    full_model, short_model = load_file(tiny_model), load_file(short)
    assert short_model.steps == TINY_STEPS - 1
    assert torch.equal(short_model.gammas(), full_model.gammas()[:TINY_STEPS])
    for name, tensor in full_model.state_dict().items():
        assert torch.equal(short_model.state_dict()[name], tensor), name
    data = diffcodec.encode(KODIM20, model=short, seed=3)
    rungs = diffcodec.decode_rungs(data, model=short)
    assert len(rungs) == TINY_STEPS + 1
    assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM20))
    full = diffcodec.decode_rungs(diffcodec.encode(KODIM20, model=tiny_model, seed=3), model=tiny_model)
    for a, b in zip(rungs[:-1], full):
        assert np.array_equal(a.pixels, b.pixels)


def test_regrid_refuses_more_steps_than_trained(tiny_model: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "regrid.py"), str(tiny_model), "--steps",
                        str(TINY_STEPS + 1), "--out", str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert r.returncode != 0 and "--steps must be in" in r.stderr
    assert not (tmp_path / "m.pt").exists()
