"""bench/rd.py end to end on two small crops with the tiny model and short baseline sweeps, and its parts
(JPEG 2000 layer cutting, BD deltas, MS-SSIM). Skipped unless the bench extra is installed."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcodec.codec import RECONS

from conftest import SAMPLE, rgb_pixels

for _module in ("imagecodecs", "matplotlib", "scipy", "tqdm"):
    pytest.importorskip(_module, reason="needs the bench extra: pip install -e '.[bench]'")


@pytest.fixture(scope="module")
def rdbench(bench_scripts: Path):
    """The bench/rdbench package."""
    import rdbench.run

    return rdbench


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two 176 x 176 crops of the sample photo (MS-SSIM needs at least 176 pixels a side)."""
    folder = tmp_path_factory.mktemp("crops")
    pixels = rgb_pixels(SAMPLE)
    Image.fromarray(pixels[:176, :176]).save(folder / "a.png")
    Image.fromarray(pixels[80:, 80:]).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def bench_run(rdbench, crops: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run with two settings per lossy baseline, two JPEG 2000 layers and the fastest WebP lossless
    method: (output folder, results)."""
    from rdbench import baselines

    mp = pytest.MonkeyPatch()
    fast_webp = {**baselines.LOSSLESS,
                 "WebP lossless": lambda p: baselines.pil_encode(p, format="WEBP", lossless=True, method=0)}
    mp.setattr(baselines, "LOSSLESS", fast_webp)
    mp.setattr(baselines, "LOSSY", tuple(dataclasses.replace(c, settings=c.settings[2:8:5]) for c in baselines.LOSSY))
    mp.setattr(baselines, "J2K_BPPS", (0.5, 2.0))
    out = tmp_path_factory.mktemp("rd")
    results = rdbench.run.run(crops, out, model=str(tiny_model), seed=3, log=lambda _: None)
    yield out, results
    mp.undo()


def points(results: dict, image: str, codec: str) -> list[dict]:
    im = next(i for i in results["images"] if i["image"] == image)
    return [p for p in im["points"] if p["codec"] == codec]


def test_writes_every_output(bench_run) -> None:
    out, results = bench_run
    for name in ("results.json", "results.csv", "rd_psnr.png", "rd_msssim.png", "contact_sheet.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["images"] == 2 and saved["meta"]["seed"] == 3
    assert len(saved["meta"]["weights_hash"]) == 16
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["image"] for r in rows} == {"a.png", "b.png", "mean"}


def test_diffcodec_rungs_are_one_file(bench_run, tiny_model: Path) -> None:
    out, results = bench_run
    data = (out / "cache" / "a.dcz").read_bytes()
    (lossless,) = points(results, "a.png", "diffcodec")
    assert lossless["bytes"] == len(data) and lossless["psnr"] is None  # the last rung is exact
    for recon in RECONS:
        rungs = points(results, "a.png", f"diffcodec {recon}")
        assert [p["setting"] for p in rungs] == [0, 1, 2, 3]  # tiny model: T = 3 lossy rungs
        assert all(a["bytes"] < b["bytes"] for a, b in zip(rungs, rungs[1:]))
        assert rungs[-1]["bytes"] < len(data)
        assert all(math.isfinite(p["psnr"]) and 0 < p["msssim"] < 1 for p in rungs)


def test_the_nelbo_is_the_encoders(bench_run, tiny_model: Path) -> None:
    import diffcodec

    _, results = bench_run
    image = next(i for i in results["images"] if i["image"] == "a.png")
    pixels = rgb_pixels(SAMPLE)[:176, :176]
    report = diffcodec.encode_report(pixels, model=tiny_model, seed=3)
    assert image["nelbo_bpsp"] == pytest.approx(report.nelbo_bits / pixels.size)
    assert results["mean"]["nelbo_bpsp"] == pytest.approx(sum(i["nelbo_bpsp"] for i in results["images"]) / 2)


def test_baselines_are_sane(bench_run) -> None:
    _, results = bench_run
    for codec in ("JPEG", "WebP", "AVIF", "JPEG XL", "JPEG 2000", "JPEG 2000 layers"):
        low, high = sorted(points(results, "b.png", codec), key=lambda p: p["bpp"])
        assert low["bpp"] < high["bpp"] and 20 < low["psnr"] < high["psnr"] < 60, codec
        assert low["msssim"] < high["msssim"] < 1, codec
    for codec in ("PNG", "WebP lossless", "JPEG 2000 reversible", "JPEG XL lossless"):
        (p,) = points(results, "b.png", codec)
        assert p["psnr"] is None and p["msssim"] == 1.0 and 1 < p["bpp"] < 24, codec
    summary = results["mean"]
    assert set(summary["lossless_bpsp"]) == {"diffcodec", "PNG", "WebP lossless", "JPEG 2000 reversible",
                                             "JPEG XL lossless"}
    jpeg = summary["curves"]["JPEG"]
    mean_bpp = np.mean([p["bpp"] for p in points(results, "a.png", "JPEG") + points(results, "b.png", "JPEG")
                        if p["setting"] == jpeg[0]["setting"]])
    assert jpeg[0]["bpp"] == pytest.approx(mean_bpp)
    assert any(r["anchor"] == "JPEG 2000" and r["diffcodec"] == "diffcodec denoise" for r in summary["bd"])


def test_rerun_resumes_from_the_cache(rdbench, bench_run, crops: Path, tiny_model: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out, results = bench_run

    def measure_again(*args: object) -> None:
        raise AssertionError("a cached image was measured again")

    monkeypatch.setattr(rdbench.run, "measure_diffcodec", measure_again)
    monkeypatch.setattr(rdbench.run, "measure_baselines", measure_again)
    (out / "results.json").unlink()
    again = rdbench.run.run(crops, out, model=str(tiny_model), seed=3, log=lambda _: None)
    assert again["images"] == results["images"]


def test_a_key_holding_a_tuple_finds_its_cached_result(rdbench, tmp_path: Path) -> None:
    """A model whose codec.json gives a list (rec_margin per step) has a tuple in its key; JSON stores it as a list,
    and the cached result is still found."""
    key = {"coding": {"rec_margin": (2, 2, 3)}, "seed": 0}
    rdbench.run._store(tmp_path / "a.json", key, {"bpp": 1.0})
    assert rdbench.run._cached(tmp_path / "a.json", key) == {"bpp": 1.0}
    assert rdbench.run._cached(tmp_path / "a.json", {**key, "seed": 1}) is None


def test_another_model_measures_only_diffcodec(rdbench, bench_run, crops: Path, other_model: Path,
                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The baselines' cache does not depend on the model: a new model re-measures diffcodec and nothing else."""
    out, results = bench_run
    shutil.copytree(out / "cache", tmp_path / "cache")

    def measure_again(*args: object) -> None:
        raise AssertionError("the baselines were measured again")

    monkeypatch.setattr(rdbench.run, "measure_baselines", measure_again)
    other = rdbench.run.run(crops, tmp_path, model=str(other_model), seed=3, log=lambda _: None)
    assert other["meta"]["weights_hash"] != results["meta"]["weights_hash"]
    for a, b in zip(other["images"], results["images"]):
        theirs = [p for p in a["points"] if not p["codec"].startswith("diffcodec")]
        assert theirs == [p for p in b["points"] if not p["codec"].startswith("diffcodec")]
    for image in ("a", "b"):  # diffcodec was coded again, with the other model's weights in the header
        assert (tmp_path / "cache" / f"{image}.dcz").read_bytes() != (out / "cache" / f"{image}.dcz").read_bytes()
        entry = json.loads((tmp_path / "cache" / f"{image}.diffcodec.json").read_text())
        assert entry["key"]["weights_hash"] == other["meta"]["weights_hash"]


def test_fewer_reconstructions_measure_only_those(rdbench, bench_run, crops: Path, tiny_model: Path,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--recon: the rungs shown by the reconstructions asked for, the same points as a full run's, and the lossless
    point; the cached full run is not taken for it (its key names the reconstructions)."""
    out, results = bench_run
    shutil.copytree(out / "cache", tmp_path / "cache")
    monkeypatch.setattr(rdbench.run, "measure_baselines", lambda *args: pytest.fail("baselines measured again"))
    few = rdbench.run.run(crops, tmp_path, model=str(tiny_model), seed=3, log=lambda _: None,
                          recons=("unrefined", "denoise"))
    codecs = {p["codec"] for im in few["images"] for p in im["points"] if p["codec"].startswith("diffcodec")}
    assert codecs == {"diffcodec", "diffcodec unrefined", "diffcodec denoise"}
    for image in ("a.png", "b.png"):
        for codec in codecs:
            assert points(few, image, codec) == points(results, image, codec)
    entry = json.loads((tmp_path / "cache" / "a.diffcodec.json").read_text())
    assert entry["key"]["recons"] == ["unrefined", "denoise"]


def test_j2k_layer_prefix_decodes_as_those_layers(rdbench) -> None:
    from PIL import ImageFile

    from rdbench import j2k

    pixels = rgb_pixels(SAMPLE)[:96, :128]
    data = j2k.encode_layers(pixels, [0.5, 1.0, 2.0])
    sizes = []
    for layers in (1, 2, 3):
        prefix = j2k.layer_prefix(data, layers, 3)
        sizes.append(len(prefix))
        with Image.open(io.BytesIO(data)) as im:  # Pillow ignores im.layers unless reduce is set: pass it directly
            codec, _, _, fd, length = im.tile[0].args
            im.tile = [ImageFile._Tile("jpeg2k", im.tile[0].extents, 0, (codec, 0, layers, fd, length))]
            want = np.asarray(im.convert("RGB"))
        with Image.open(io.BytesIO(prefix)) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), want)
    assert sizes[0] < sizes[1] < sizes[2] == len(data)
    no_plt = io.BytesIO()
    Image.fromarray(pixels).save(no_plt, format="JPEG2000", no_jp2=True, quality_mode="rates", quality_layers=[48, 24])
    with pytest.raises(ValueError, match="plt=True"):
        j2k.layer_prefix(no_plt.getvalue(), 1, 2)


def test_bd_deltas(rdbench) -> None:
    from rdbench.bd import bd_quality, bd_rate

    bpp, q = [0.25, 0.5, 1.0, 2.0], [29.3, 32.2, 36.0, 40.8]
    assert bd_rate(bpp, q, [0.9 * b for b in bpp], q).value == pytest.approx(-10.0)  # 10 % fewer bits
    assert bd_quality(bpp, q, bpp, [x + 1.5 for x in q]).value == pytest.approx(1.5)
    delta = bd_quality(bpp, q, [4 * b for b in bpp], q)
    assert (delta.lo, delta.hi) == pytest.approx((1.0, 2.0))  # only the shared rate range counts
    assert bd_rate(bpp, q, bpp, [x + 20 for x in q]) is None  # no shared quality range


def test_ms_ssim(rdbench) -> None:
    from rdbench.metrics import ms_ssim

    pixels = rgb_pixels(SAMPLE)
    values = []
    for quality in (10, 50, 90):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        values.append(ms_ssim(np.asarray(Image.open(buf)), pixels))
    assert 0.5 < values[0] < values[1] < values[2] < 1
    assert ms_ssim(pixels, pixels) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="176"):
        ms_ssim(pixels[:175], pixels[:175])
