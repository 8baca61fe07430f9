"""`diffcodec train`: exact resume, data-parallel ranks that agree, the model card, and refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import DATA, KODIM01, SAMPLE
from diffcodec.cli import app
from diffcodec.train.loop import CHECKPOINT_FILE, TrainOptions, train
from diffcodec.zoo import load_file

runner = CliRunner()
QUICK = ["--config", "tiny", "--batch", "4", "--crop", "32", "--warmup", "2", "--lr", "1e-3", "--eval-batches", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real photo crops (one too small for a 32 x 32 crop)."""
    folder = tmp_path_factory.mktemp("photos")
    for p in list(DATA.glob("kodim*.png")) + [SAMPLE]:
        shutil.copy(p, folder / p.name)
    return folder


def options(photos: Path, out: Path, **kw: object) -> TrainOptions:
    base = dict(data=photos, out=out, config="tiny", batch=4, crop=32, warmup=2, lr=1e-3, val=photos,
                eval_every=0, eval_batches=1, save_every=2, steps=6)
    base.update(kw)
    return TrainOptions(**base)


def states(out: Path) -> dict:
    return torch.load(out / CHECKPOINT_FILE, weights_only=True)


def test_resume_is_exact(photos: Path, tmp_path: Path) -> None:
    """Stopping after 3 steps and resuming gives the weights, EMA and optimiser state of one run of 6 steps."""
    train(options(photos, tmp_path / "once"))
    train(options(photos, tmp_path / "twice", stop_after=3))
    assert states(tmp_path / "twice")["step"] == 3
    train(options(photos, tmp_path / "twice", resume=True))
    a, b = states(tmp_path / "once"), states(tmp_path / "twice")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for pa, pb in zip(a["opt"]["state"].values(), b["opt"]["state"].values()):
        assert torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert [s["to_step"] for s in b["segments"]] == [3, 6]
    assert (a["model"]["net.head.weight"] != 0).any()  # training moved the zero-initialised head


def test_init_starts_from_a_model(photos: Path, tmp_path: Path, tiny_model: Path) -> None:
    """--init copies a model's config and weights; 0 extra steps would give back the same network."""
    summary = train(options(photos, tmp_path / "ft", init=str(tiny_model), steps=2))
    assert summary.step == 2
    start, tuned = load_file(tiny_model), load_file(tmp_path / "ft" / "model.pt")
    assert start.config == tuned.config
    # EMA 0.999 over 2 steps stays within a hair of the initial weights, far from a fresh random init
    w0, w1 = start.net.stem.weight, tuned.net.stem.weight
    assert torch.allclose(w0, w1, atol=1e-2)


def test_cli_trains_and_writes_the_model_card(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "w" / "mini"
    r = runner.invoke(app, ["train", str(photos), "--out", str(out), "--steps", "3", "--val", str(photos),
                            "--measure", str(photos), *QUICK])
    assert r.exit_code == 0, r.output
    card = (out / "README.md").read_text()
    for text in ("Model card: `mini`", "3 steps of 4 random 32 x 32 crops", "parameters", "wall time",
                 "lossless", "| bpp |", "| PSNR (dB) |"):
        assert text in card, text
    assert "(smaller than the crop, skipped: 1 train, 1 val)" in (out / "train_log.txt").read_text()
    # the trained model codes a photo exactly
    from diffcodec.codec import decode, encode
    from conftest import rgb_pixels

    data = encode(KODIM01, model=out / "model.pt", seed=1)
    assert np.array_equal(decode(data, model=out / "model.pt"), rgb_pixels(KODIM01))


@pytest.mark.parametrize("extra, message", [
    ([], "already holds a model: pass --resume to continue it or --force to start over"),
    (["--resume", "--init", "default"], "--resume and --init exclude each other"),
    (["--config", "huge", "--force"], "--config 'huge': not a preset"),
    (["--batch", "3", "--force"], None),  # accepted on one process
])
def test_cli_refusals(photos: Path, tmp_path: Path, extra: list[str], message: str | None) -> None:
    out = tmp_path / "m"
    assert runner.invoke(app, ["train", str(photos), "--out", str(out), "--steps", "1", "--val", str(photos),
                               *QUICK]).exit_code == 0
    r = runner.invoke(app, ["train", str(photos), "--out", str(out), "--steps", "2", "--val", str(photos),
                            *QUICK, *extra])
    if message is None:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 1 and r.output.startswith("error: ") and message in r.output, r.output


def test_cli_refuses_missing_inputs(photos: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *QUICK])
    assert r.exit_code == 1 and "not a directory" in r.output
    r = runner.invoke(app, ["train", str(photos), "--out", str(tmp_path / "o"), "--resume", *QUICK])
    assert r.exit_code == 1 and "checkpoint.pt not found" in r.output
    r = runner.invoke(app, ["train", str(photos), "--out", str(tmp_path / "o"), *QUICK, "--crop", "512",
                            "--val", str(photos)])
    assert r.exit_code == 1 and "no photo of at least 512 x 512 pixels" in r.output
    assert not (tmp_path / "o" / "model.pt").exists()


def test_two_processes_agree(photos: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): each rank draws its own crops, the mean gradient keeps the weights
    identical on both (the run fails with 'ranks disagree' otherwise)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "diffcodec",
         "train", str(photos), "--out", str(out), "--steps", "4", "--val", str(photos), "--save-every", "2", *QUICK],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    assert "2 rank(s) agree on weights" in log
    ck = states(out)
    assert len(ck["rng"]) == 2 and ck["rng"][0]["numpy"] != ck["rng"][1]["numpy"]
    # resuming needs as many processes as wrote the checkpoint
    r = runner.invoke(app, ["train", str(photos), "--out", str(out), "--steps", "6", "--resume", "--val", str(photos),
                            *QUICK])
    assert r.exit_code == 1 and "written by 2 processes" in r.output


def test_fixed_gamma_keeps_the_grid(photos: Path, tmp_path: Path, tiny_model: Path) -> None:
    """--fixed-gamma fine-tunes the network but leaves gamma_min, hence every gamma of the grid, bit for bit."""
    train(options(photos, tmp_path / "fixed", init=str(tiny_model), steps=3, fixed_gamma=True))
    train(options(photos, tmp_path / "free", init=str(tiny_model), steps=3))
    start = load_file(tiny_model)
    fixed, free = (states(tmp_path / d)["model"] for d in ("fixed", "free"))
    assert torch.equal(fixed["schedule.gamma_min"], start.schedule.gamma_min.detach())
    assert not torch.equal(free["schedule.gamma_min"], start.schedule.gamma_min.detach())
    assert not torch.equal(fixed["net.stem.weight"], start.net.stem.weight.detach())
