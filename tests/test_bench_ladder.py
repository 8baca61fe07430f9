"""bench/ladder.py: the held-out photos it measures and its BD figures against JPEG 2000."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KODIM01, ROOT

for _module in ("imagecodecs", "scipy"):
    pytest.importorskip(_module, reason="needs the bench extra: pip install -e '.[bench]'")


@pytest.fixture(scope="module")
def ladder(bench_scripts: Path):
    """The bench/ladder.py module."""
    import ladder

    return ladder


def test_bd_against_anchor_measures_the_gap(ladder) -> None:
    """A ladder 1 dB under JPEG 2000's curve at every rate reads -1 dB; at JPEG 2000's rates with 20% more
    bits, +20% BD-rate. The last rung (exact) is left out."""
    anchor = [{"setting": b, "bpp": b, "psnr": 30 + 4 * math.log2(b)} for b in (0.1, 0.25, 0.5, 1, 2, 4)]
    rows = [{"anchor": anchor}, {"anchor": anchor}]
    lower = [{"rung": k, "bpp": a["bpp"], "psnr": a["psnr"] - 1} for k, a in enumerate(anchor)] + [
        {"rung": 6, "bpp": 12.0, "psnr": float("inf")}]
    assert ladder.bd_against_anchor(rows, lower)["bd_psnr_db"] == pytest.approx(-1.0, abs=1e-6)
    costlier = [{"rung": k, "bpp": 1.2 * a["bpp"], "psnr": a["psnr"]} for k, a in enumerate(anchor)] + [
        {"rung": 6, "bpp": 12.0, "psnr": float("inf")}]
    assert ladder.bd_against_anchor(rows, costlier)["bd_rate_pct"] == pytest.approx(20.0, abs=1e-6)
    exact_top = [{"anchor": anchor[:-1] + [{**anchor[-1], "psnr": float("inf")}]}, {"anchor": anchor}]
    bd = ladder.bd_against_anchor(exact_top, lower)
    assert len(bd["curve"]) == len(anchor) - 1 and bd["bd_psnr_db"] == pytest.approx(-1.0, abs=1e-6)


def test_held_out_run_measures_only_held_out_photos_with_their_anchor(ladder, tiny_model: Path, tmp_path: Path) -> None:
    from rdbench.baselines import J2K_BPPS

    from diffcodec.train.data import list_images, split_holdout

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(60):
        shutil.copy(KODIM01, photos / f"photo{i:02d}.png")
    held = [p.name for p in split_holdout(list_images(photos))[1]]
    assert 0 < len(held) < 60
    out = tmp_path / "ladder.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "ladder.py"), str(photos), "--held-out", "--anchor",
                           "--model", str(tiny_model), "--limit", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert [r["image"] for r in result["images"]] == held[:2]
    assert result["meta"]["held_out"] is True
    for r in result["images"]:
        assert len(r["anchor"]) == len(J2K_BPPS) and all(0 < p["bpp"] for p in r["anchor"])
    assert "against JPEG 2000 on the same images" in done.stdout
