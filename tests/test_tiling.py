"""Large images run the network in tiles: the tiles cover the image once, stitching is exact, and a tiled
image still round-trips exactly with every rung verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import diffcodec
from conftest import KODIM08, KODIM20, rgb_pixels
from diffcodec import codec, tiling
from diffcodec.bitstream import read_stream


@pytest.mark.parametrize("h, w, core", [(37, 53, 16), (64, 64, 32), (5, 300, 64), (1, 1, 8)])
def test_tiles_cover_every_pixel_once(h: int, w: int, core: int) -> None:
    count = np.zeros((h, w), int)
    for rows, cols in tiling.tiles(h, w, core):
        count[rows, cols] += 1
    assert (count == 1).all()


def test_stitching_is_exact_for_a_pointwise_net(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "TILE_ABOVE", 100)
    monkeypatch.setattr(tiling, "CORE", 16)
    monkeypatch.setattr(tiling, "HALO", 8)
    calls = []

    def net(z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(z.shape[-2:])
        return 2 * z + gamma, z.exp()

    z, gamma = torch.randn(1, 3, 37, 53), torch.tensor(0.5)
    eps_hat, s_hat = tiling.predict_tiled(net, z, gamma)
    assert torch.equal(eps_hat, 2 * z + gamma) and torch.equal(s_hat, z.exp())
    assert len(calls) == 3 * 4 and max(max(s) for s in calls) <= 16 + 2 * 8


def test_a_tiled_image_round_trips(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    monkeypatch.setattr(tiling, "TILE_ABOVE", 1000)
    monkeypatch.setattr(tiling, "CORE", 32)
    monkeypatch.setattr(tiling, "HALO", 16)
    data = diffcodec.encode(KODIM20, model=tiny_model, seed=3)
    rungs = diffcodec.decode_rungs(data, model=tiny_model)  # every rung passes its reconstruction check
    assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM20))


@pytest.mark.parametrize("h, w", [(512, 768), (768, 512), (300, 17), (17, 300), (255, 200), (40, 40), (2000, 1100)])
def test_regions_cut_the_longer_side_in_halves_from_format_3(h: int, w: int) -> None:
    cores = tiling.regions(h, w)
    count = np.zeros((h, w), int)
    for rows, cols in cores:
        count[rows, cols] += 1
    assert (count == 1).all()
    if h * w > tiling.TILE_ABOVE:
        assert cores == tiling.tiles(h, w) == tiling.regions(h, w, split=False)
    elif max(h, w) >= tiling.SPLIT_FROM:
        (rows, cols), _ = cores
        cut = rows.stop if h >= w else cols.stop
        assert len(cores) == 2 and cut % 16 == 0 and cut == max(h, w) // 2 // 16 * 16
    else:
        assert len(cores) == 1
    if h * w <= tiling.TILE_ABOVE:
        assert tiling.regions(h, w, split=False) == [(slice(0, h), slice(0, w))]  # format 2: whole


def test_halves_see_their_context_and_keep_the_callers_grad_mode() -> None:
    """A net that reads 3 pixels around each: the halves, each with HALO pixels of the other, give the whole
    image's values; the workers run under the caller's grad mode."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)))
    x = torch.randn(1, 3, 40, 300)
    with torch.no_grad():
        whole, halves = net(x), tiling.run_tiled(net, x)
        assert not halves.requires_grad
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-5)
    assert tiling.run_tiled(net, x).requires_grad


def test_format_3_runs_the_networks_in_halves_and_a_format_2_file_still_decodes(
        monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    seen: list[bool] = []
    regions = tiling.regions
    monkeypatch.setattr(tiling, "regions", lambda h, w, split=True: seen.append(split) or regions(h, w, split))
    new = diffcodec.encode(KODIM08, model=tiny_model, seed=3)
    assert read_stream(new).header.version == 3 and set(seen) == {True}
    seen.clear()
    monkeypatch.setattr(codec, "FORMAT_VERSION", 2)
    old = diffcodec.encode(KODIM08, model=tiny_model, seed=3)  # as the last version 2 encoder wrote it
    assert read_stream(old).header.version == 2 and set(seen) == {False}
    seen.clear()
    for data, split in ((new, True), (old, False)):
        rungs = diffcodec.decode_rungs(data, model=tiny_model)  # every rung passes its reconstruction check
        assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM08)) and set(seen) == {split}
        seen.clear()
