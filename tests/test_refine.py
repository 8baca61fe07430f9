"""The post-filter: train-refine, refined rungs, files that are the same with or without it, and step context
networks that read its x_hat'."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffcodec
from diffcodec import codec
from diffcodec import step_context as sc
from diffcodec.bitstream import CODER_REC_STREAM_WIDE, CODER_UQ_PACKED, read_stream
from diffcodec.cli import app
from diffcodec.context import earlier_fit_name
from diffcodec.codec import psnr
from diffcodec.errors import BadInputError, ModelError
from diffcodec.refine import REFINE_FILE, refine
from diffcodec.train.refine import RefineOptions, train_refine
from diffcodec.train.step_context import StepContextOptions, train_step_context
from diffcodec.zoo import load_model

from conftest import KODIM15, copy_default, rgb_pixels

STEPS = 5  # the default model's codec.json
REFINED = (3, 4)  # the rungs the fixture fits


def _options(photos: Path, model: Path, **kw: object) -> RefineOptions:
    base = dict(data=photos, val=photos, model=str(model), rungs=REFINED, iters=40, batch=4, crop=32, pool=16,
                val_crops=8, lr=3e-3, width=8, blocks=1, eval_every=40)
    return RefineOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def refined_model(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default model with post-filters (8 channels, 1 block) fitted briefly on two real crops, for
    rungs 3 and 4."""
    folder = copy_default(tmp_path_factory.mktemp("rf") / "default")
    summary = train_refine(_options(photos, folder), log=lambda line: None)
    assert summary.path == folder / REFINE_FILE
    assert sorted(summary.refined_psnr) == list(REFINED)
    assert summary.refined_psnr[4] > summary.plain_psnr[4]  # the fit learnt something
    return folder


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_default(tmp_path_factory.mktemp("bare") / "default")


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.ascontiguousarray(rgb_pixels(KODIM15)[:48, :40])


def test_the_fitted_networks_are_found_beside_the_model(refined_model: Path) -> None:
    loaded = load_model(refined_model)
    assert loaded.refiners is not None and sorted(loaded.refiners.nets) == list(REFINED)
    assert loaded.refiners.model_hash == loaded.weights_hash


def test_a_file_is_the_same_with_or_without_the_post_filter(refined_model: Path, bare_model: Path,
                                                            pixels: np.ndarray) -> None:
    data = diffcodec.encode(pixels, model=refined_model, seed=5)
    assert data == diffcodec.encode(pixels, model=bare_model, seed=5)
    # both decoders accept it (the rung checks are made on the unrefined x_hat) and agree where nothing is refined
    with_filter = diffcodec.decode_rungs(data, model=refined_model)
    without = diffcodec.decode_rungs(data, model=bare_model)
    for a, b in zip(with_filter, without):
        assert np.array_equal(a.pixels, b.pixels) == (a.rung not in REFINED), a.rung
    assert np.array_equal(with_filter[-1].pixels, pixels)


def test_unrefined_shows_the_network_alone(refined_model: Path, bare_model: Path, pixels: np.ndarray) -> None:
    data = diffcodec.encode(pixels, model=refined_model, seed=5)
    for k in REFINED:
        assert np.array_equal(diffcodec.decode(data, rung=k, recon="unrefined", model=refined_model),
                              diffcodec.decode(data, rung=k, model=bare_model))


def test_the_encoder_reports_the_psnr_the_decoder_shows(refined_model: Path, pixels: np.ndarray) -> None:
    report = diffcodec.encode_report(pixels, model=refined_model, seed=5)
    for rung in diffcodec.decode_rungs(report.data, model=refined_model)[:-1]:
        assert report.rungs[rung.rung].psnr == pytest.approx(psnr(rung.pixels, pixels), abs=1e-9)


def test_a_refine_file_for_other_weights_is_refused(refined_model: Path, other_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(other_model, folder / "model.pt")
    shutil.copy(refined_model / REFINE_FILE, folder / REFINE_FILE)
    with pytest.raises(ModelError, match="trained for weights"):
        load_model(folder)


def test_a_broken_refine_file_is_a_model_error(tmp_path: Path) -> None:
    folder = copy_default(tmp_path / "broken")
    (folder / REFINE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a diffcodec refine file"):
        load_model(folder)


def test_training_refuses_a_rung_outside_the_chain(refined_model: Path, photos: Path) -> None:
    with pytest.raises(BadInputError, match="--rung must be in"):
        train_refine(_options(photos, refined_model, rungs=(STEPS + 1,), iters=1), log=lambda line: None)


def test_training_can_start_from_a_refine_file(refined_model: Path, photos: Path, tmp_path: Path) -> None:
    start = refined_model / REFINE_FILE
    summary = train_refine(_options(photos, refined_model, rungs=(4,), iters=1, lr=0.0, width=None, blocks=None,
                                    out=tmp_path / "more.pt", init=start), log=lambda line: None)
    assert summary.refined_psnr[4] > summary.plain_psnr[4]  # the start was the fitted network, not a zero output
    saved, first = (torch.load(p, weights_only=True)["nets"] for p in (summary.path, start))
    assert sorted(saved) == ["3", "4"]  # rung 3, not refitted, is kept from the start file
    for k in ("3", "4"):
        assert saved[k]["config"] == first[k]["config"]  # width and blocks come from the file
        assert all(torch.equal(saved[k]["state_dict"][n], v) for n, v in first[k]["state_dict"].items())  # lr 0
    with pytest.raises(BadInputError, match="made for model"):
        train_refine(_options(photos, refined_model, rungs=(1,), iters=1, init=start), log=lambda line: None)


def test_a_refit_can_deepen_the_networks_but_not_change_their_width(refined_model: Path, photos: Path,
                                                                     tmp_path: Path) -> None:
    start = refined_model / REFINE_FILE
    plain = train_refine(_options(photos, refined_model, rungs=(4,), iters=1, lr=0.0, width=None, blocks=None,
                                  out=tmp_path / "same.pt", init=start), log=lambda line: None)
    deeper = train_refine(_options(photos, refined_model, rungs=(4,), iters=1, lr=0.0, width=None, blocks=3,
                                   out=tmp_path / "deeper.pt", init=start), log=lambda line: None)
    assert torch.load(deeper.path, weights_only=True)["nets"]["4"]["config"]["blocks"] == 3
    assert deeper.refined_psnr[4] == pytest.approx(plain.refined_psnr[4], abs=1e-6)  # new blocks start as identity
    with pytest.raises(BadInputError, match="add blocks, not remove them"):
        train_refine(_options(photos, refined_model, rungs=(4,), iters=1, width=None, blocks=0, init=start),
                     log=lambda line: None)
    with pytest.raises(BadInputError, match="which a refit keeps"):
        train_refine(_options(photos, refined_model, rungs=(4,), iters=1, width=4, blocks=None, init=start),
                     log=lambda line: None)


def test_cli_decodes_unrefined_and_refuses_bad_training_input(refined_model: Path, pixels: np.ndarray,
                                                              tmp_path: Path) -> None:
    stream = tmp_path / "s.dcz"
    stream.write_bytes(diffcodec.encode(pixels, model=refined_model, seed=5))
    out = tmp_path / "r4.png"
    result = CliRunner().invoke(app, ["decode", str(stream), "--model", str(refined_model), "--rung", "4",
                                      "--recon", "unrefined", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(rgb_pixels(out), diffcodec.decode(stream.read_bytes(), rung=4, recon="unrefined",
                                                            model=refined_model))
    result = CliRunner().invoke(app, ["train-refine", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "not a directory" in result.output
    result = CliRunner().invoke(app, ["train-refine", str(tmp_path), "--init", str(tmp_path / "none.pt")])
    assert result.exit_code != 0 and "no such file" in result.output


@pytest.fixture(scope="module")
def refined_steps_model(refined_model: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The post-filtered model with step context networks for steps 4 and 5 fitted on its x_hat' (rungs 3, 4)."""
    folder = copy_default(tmp_path_factory.mktemp("rs") / "default")
    shutil.copy(refined_model / REFINE_FILE, folder / REFINE_FILE)
    opts = StepContextOptions(data=photos, val=photos, model=str(folder), steps=(4, 5), iters=40, batch=4, crop=32,
                              pool=16, val_crops=8, lr=3e-3, width=8, blocks=1, eval_every=40)
    summary = train_step_context(opts, log=lambda line: None)
    assert summary.context_bits[5] < summary.plain_bits[5]
    return folder


def test_step_context_on_the_post_filter_decodes_exactly(refined_steps_model: Path, pixels: np.ndarray,
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sc, "MIN_STEP_BITS", 0)  # group the steps of this small crop
    loaded = load_model(refined_steps_model)
    assert loaded.step_nets is not None and loaded.refiners is not None
    assert loaded.step_nets.refine_hash == loaded.refiners.weights_hash  # the file names the post-filter it reads
    data = diffcodec.encode(pixels, model=refined_steps_model, seed=5, rec_steps=4)  # step 5 by UQ: both coders
    assert [c.coder for c in read_stream(data).chunks[3:5]] == [CODER_REC_STREAM_WIDE, CODER_UQ_PACKED]
    assert np.array_equal(diffcodec.decode(data, model=refined_steps_model), pixels)  # every rung checked
    # the same networks reading the U-Net's x_hat send other bytes: the post-filter is part of the prior
    plain = copy_default(tmp_path / "plain")
    sc.save_step_nets(plain / sc.STEP_CONTEXT_FILE, loaded.step_nets.nets, loaded.weights_hash)
    shutil.copy(refined_steps_model / REFINE_FILE, plain / REFINE_FILE)
    other = diffcodec.encode(pixels, model=plain, seed=5, rec_steps=4)
    assert other != data and np.array_equal(diffcodec.decode(other, model=plain), pixels)


def test_step_context_without_its_post_filter_is_refused(refined_steps_model: Path, tmp_path: Path) -> None:
    folder = copy_default(tmp_path / "default")
    shutil.copy(refined_steps_model / sc.STEP_CONTEXT_FILE, folder / sc.STEP_CONTEXT_FILE)
    with pytest.raises(ModelError, match=r"reads the post-filter .* nor refine\.[0-9a-f]{16}\.pt"):
        load_model(folder)


def test_a_post_filter_refit_keeps_the_fit_the_step_context_reads(refined_steps_model: Path, pixels: np.ndarray,
                                                                   photos: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(sc, "MIN_STEP_BITS", 0)  # group the steps of this small crop
    folder = tmp_path / "default"
    shutil.copytree(refined_steps_model, folder)
    old = diffcodec.encode(pixels, model=folder, seed=5)
    first = load_model(folder).refiners
    assert first is not None
    train_refine(_options(photos, folder, iters=2, seed=1), log=lambda line: None)  # a refit writes refine.pt
    loaded = load_model(folder)  # its step context still reads the first fit, kept beside it
    assert loaded.refiners is not None and loaded.refiners.weights_hash != first.weights_hash
    assert (folder / earlier_fit_name(REFINE_FILE, first.weights_hash)).is_file()
    assert loaded.step_nets is not None and loaded.step_nets.refine_hash == first.weights_hash
    assert np.array_equal(diffcodec.decode(old, model=folder), pixels)  # every rung checked
    assert diffcodec.encode(pixels, model=folder, seed=5) == old  # the same priors: the same bytes
    shown = diffcodec.decode(old, model=folder, rung=4)  # shown by the new post-filter
    assert not np.array_equal(shown, diffcodec.decode(old, model=refined_steps_model, rung=4))


def _refit_rung_4(model: Path, photos: Path, tmp_path: Path) -> Path:
    """A copy of `model` whose post-filter has rung 4 refitted (deepened to 2 blocks), the first fit kept beside it."""
    folder = tmp_path / "default"
    shutil.copytree(model, folder)
    first = folder / earlier_fit_name(REFINE_FILE, load_model(folder).refiners.weights_hash)
    shutil.copy(folder / REFINE_FILE, first)
    train_refine(_options(photos, folder, rungs=(4,), iters=2, seed=1, width=None, blocks=2, init=first),
                 log=lambda line: None)
    return folder


def test_a_rung_refit_shares_the_other_rungs_passes_and_reports_what_the_decoder_shows(
        refined_steps_model: Path, pixels: np.ndarray, photos: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Refitting rung 4 alone: the step context reads the first fit, the decoder shows the new one at rung 4 and
    the first at rung 3, whose network both fits share and the encoder runs once."""
    monkeypatch.setattr(sc, "MIN_STEP_BITS", 0)  # group the steps of this small crop
    folder = _refit_rung_4(refined_steps_model, photos, tmp_path)
    loaded = load_model(folder)
    old = load_model(refined_steps_model).refiners
    assert loaded.refiners.net_hashes[3] == old.net_hashes[3] and loaded.refiners.net_hashes[4] != old.net_hashes[4]
    passes = []
    monkeypatch.setattr(codec, "refine", lambda *args: passes.append(1) or refine(*args))
    report = diffcodec.encode_report(pixels, model=folder, seed=5)
    assert len(passes) == 3  # rung 3 once (shared), rung 4 twice (the step context's fit, and the one shown)
    assert report.data == diffcodec.encode(pixels, model=refined_steps_model, seed=5)  # the same priors
    for rung in diffcodec.decode_rungs(report.data, model=folder)[:-1]:
        assert report.rungs[rung.rung].psnr == pytest.approx(psnr(rung.pixels, pixels), abs=1e-9)
    assert not np.array_equal(diffcodec.decode(report.data, model=folder, rung=4),
                              diffcodec.decode(report.data, model=refined_steps_model, rung=4))
    assert np.array_equal(diffcodec.decode(report.data, model=folder, rung=3),
                          diffcodec.decode(report.data, model=refined_steps_model, rung=3))


def test_a_step_context_refit_keeps_the_steps_whose_post_filter_network_is_unchanged(
        refined_steps_model: Path, pixels: np.ndarray, photos: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """After rung 4's post-filter was refitted, step 5 (which reads rung 4) is refitted on it alone; step 4 reads
    rung 3, whose network the two fits share, and is kept. Keeping step 5 instead is refused."""
    monkeypatch.setattr(sc, "MIN_STEP_BITS", 0)  # group the steps of this small crop
    folder = _refit_rung_4(refined_steps_model, photos, tmp_path)
    start = folder / sc.STEP_CONTEXT_FILE
    opts = StepContextOptions(data=photos, val=photos, model=str(folder), steps=(4,), iters=1, batch=4, crop=32,
                              pool=16, val_crops=8, lr=0.0, init=start, out=tmp_path / "step4.pt")
    with pytest.raises(BadInputError, match=r"differs at step\(s\) 5: refit those too"):
        train_step_context(opts, log=lambda line: None)
    kept = torch.load(start, weights_only=True)["nets"]["3"]
    train_step_context(dataclasses.replace(opts, steps=(5,), out=start), log=lambda line: None)
    loaded = load_model(folder)
    assert loaded.step_nets.refine_hash == loaded.refiners.weights_hash  # it reads the post-filter shown
    saved = torch.load(start, weights_only=True)["nets"]["3"]
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in kept["state_dict"].items())
    passes = []
    monkeypatch.setattr(codec, "refine", lambda *args: passes.append(1) or refine(*args))
    report = diffcodec.encode_report(pixels, model=folder, seed=5)
    assert len(passes) == 2  # one pass per rung: the fit read and the fit shown are one
    rungs = diffcodec.decode_rungs(report.data, model=folder)
    assert np.array_equal(rungs[-1].pixels, pixels)
    for rung in rungs[:-1]:
        assert report.rungs[rung.rung].psnr == pytest.approx(psnr(rung.pixels, pixels), abs=1e-9)
