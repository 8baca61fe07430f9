"""The pixel context network: train-context, exact lossless round trips through its chunk, and its failures."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffcodec
from diffcodec import context as ctx
from diffcodec.bitstream import CODER_CONTEXT, CODER_CONTEXT_SCALED, CODER_UQ, Chunk, read_stream, write_stream
from diffcodec.cli import app
from diffcodec.errors import BadInputError, BitstreamError, ModelError
from diffcodec.train import context as ctx_train
from diffcodec.train.context import ContextOptions, train_context
from diffcodec.uqdm import pixel_bits
from diffcodec.zoo import load_model

from conftest import DATA, KODIM15, KODIM20, SAMPLE, copy_default, rgb_pixels


STEPS = 5  # the default model's codec.json: the context is fitted at z_5


def _fit(folder: Path, photos: Path, iters: int) -> ctx_train.ContextSummary:
    """A small context network (16 channels, 1 block) fitted briefly on 32 x 32 crops of `photos`."""
    opts = ContextOptions(data=photos, val=photos, model=str(folder), iters=iters, batch=4, crop=32, pool=16,
                          val_crops=8, lr=3e-3, width=16, blocks=1, eval_every=iters)
    return train_context(opts, log=lambda line: None)


@pytest.fixture(scope="module")
def context_model(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default model (its U-Net makes the pixel term worth modelling) with a context network
    fitted on two real crops."""
    folder = copy_default(tmp_path_factory.mktemp("ctx") / "default")
    summary = _fit(folder, photos, iters=60)
    assert summary.path == folder / ctx.CONTEXT_FILE
    assert summary.context_bits < summary.factorised_bits  # the fit learnt something
    return folder


def test_the_fitted_context_is_found_beside_the_model(context_model: Path) -> None:
    loaded = load_model(context_model)
    assert loaded.context is not None and loaded.context.steps == STEPS
    assert loaded.context.model_hash == loaded.weights_hash


@pytest.mark.parametrize(("image", "crop"), [(KODIM15, (slice(None), slice(None))),
                                           (SAMPLE, (slice(100, 161), slice(50, 97)))])
def test_lossless_round_trip_through_the_context_chunk(context_model: Path, image: Path,
                                                       crop: tuple[slice, slice]) -> None:
    pixels = np.ascontiguousarray(rgb_pixels(image)[crop])  # 61 x 47: groups of unequal size
    data = diffcodec.encode(pixels, model=context_model, seed=3)
    plain = diffcodec.encode(pixels, model=context_model, seed=3, context=False)
    chunks, plain_chunks = read_stream(data).chunks, read_stream(plain).chunks
    assert chunks[-1].coder == CODER_CONTEXT_SCALED and plain_chunks[-1].coder == CODER_UQ
    assert chunks[:-1] == plain_chunks[:-1]  # the steps are the same; only the lossless chunk differs
    assert len(data) < len(plain)
    assert np.array_equal(diffcodec.decode(data, model=context_model), pixels)


def test_a_tiny_image_keeps_the_factorised_chunk(context_model: Path) -> None:
    pixels = rgb_pixels(KODIM20)[:1, :3]
    data = diffcodec.encode(pixels, model=context_model, seed=3)
    assert read_stream(data).chunks[-1].coder == CODER_UQ  # the context's framing would cost more than it saves
    assert np.array_equal(diffcodec.decode(data, model=context_model), pixels)


def test_other_step_counts_code_without_context(context_model: Path) -> None:
    data = diffcodec.encode(KODIM15, model=context_model, seed=3, steps=STEPS - 1)
    assert read_stream(data).chunks[-1].coder == CODER_UQ


def test_a_decoder_without_the_context_file_says_so(context_model: Path, tmp_path: Path) -> None:
    data = diffcodec.encode(KODIM15, model=context_model, seed=3)
    bare = tmp_path / "default"
    bare.mkdir()
    shutil.copy(context_model / "model.pt", bare / "model.pt")
    with pytest.raises(ModelError, match="pixel context network"):
        diffcodec.decode(data, model=bare)
    lossy = diffcodec.decode(data, model=bare, rung=STEPS)  # the lossy rungs need no context
    assert np.array_equal(lossy, diffcodec.decode(data, model=context_model, rung=STEPS))
    result = CliRunner().invoke(app, ["decode", str(_write(tmp_path, data)), "--model", str(bare),
                                      "-o", str(tmp_path / "out.png")])
    assert result.exit_code != 0 and "pixel context network" in result.output
    assert not (tmp_path / "out.png").exists()


def test_another_context_file_is_refused(context_model: Path, tmp_path: Path) -> None:
    data = diffcodec.encode(KODIM15, model=context_model, seed=3)
    other = tmp_path / "default"
    other.mkdir()
    shutil.copy(context_model / "model.pt", other / "model.pt")
    loaded = load_model(context_model)
    assert loaded.context is not None
    net = loaded.context.net
    with torch.no_grad():
        net.out.bias.add_(0.01)
    ctx.save_context(other / ctx.CONTEXT_FILE, net, STEPS, loaded.weights_hash)
    with torch.no_grad():
        net.out.bias.sub_(0.01)
    with pytest.raises(ModelError, match="pixel context weights"):
        diffcodec.decode(data, model=other)


def test_a_refit_keeps_the_earlier_context_so_older_files_decode(context_model: Path, photos: Path,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "default"
    shutil.copytree(context_model, folder)
    old = diffcodec.encode(KODIM15, model=folder, seed=3)
    assert read_stream(old).chunks[STEPS].coder == CODER_CONTEXT_SCALED
    first = load_model(folder).context
    assert first is not None
    _fit(folder, photos, iters=2)  # a refit writes context.pt beside the model
    kept = folder / ctx.earlier_fit_name(ctx.CONTEXT_FILE, first.weights_hash)
    loaded = load_model(folder)
    assert loaded.context is not None and loaded.context.weights_hash != first.weights_hash and kept.is_file()
    assert [c.weights_hash for c in loaded.earlier_contexts] == [first.weights_hash]
    assert np.array_equal(diffcodec.decode(old, model=folder), rgb_pixels(KODIM15))
    kept.unlink()
    with pytest.raises(ModelError, match=kept.name):
        diffcodec.decode(old, model=folder)


def test_a_context_file_for_other_weights_is_refused(context_model: Path, other_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(other_model, folder / "model.pt")
    shutil.copy(context_model / ctx.CONTEXT_FILE, folder / ctx.CONTEXT_FILE)
    with pytest.raises(ModelError, match="trained for weights"):
        load_model(folder)


def test_a_corrupt_context_payload_is_an_error(context_model: Path) -> None:
    data = diffcodec.encode(KODIM15, model=context_model, seed=3)
    payload = read_stream(data).chunks[-1].payload
    loaded = load_model(context_model)
    assert loaded.context is not None
    h, w = rgb_pixels(KODIM15).shape[:2]
    end = ctx.ChainEnd(*(torch.zeros(1, 3, h, w) for _ in range(5)))
    # cut in the scales, in a length, in a block; one byte more
    for bad in (payload[:10], payload[:22], payload[:30], payload + b"\0"):
        with pytest.raises(BitstreamError):
            ctx.decode_pixels(loaded.context, end._replace(s_hat=torch.ones(1, 3, h, w), b=torch.ones(1, 3, h, w)),
                              bad, {"tables": 0.0, "coder": 0.0})


def test_training_can_start_from_a_context_file(context_model: Path, photos: Path, tmp_path: Path) -> None:
    start = context_model / ctx.CONTEXT_FILE
    opts = ContextOptions(data=photos, val=photos, model=str(context_model), iters=1, batch=4, crop=32, pool=16,
                          val_crops=8, lr=0.0, width=8, blocks=0, out=tmp_path / "more.pt", init=start)
    summary = train_context(opts, log=lambda line: None)
    assert summary.context_bits < summary.factorised_bits  # the start was the fitted network, not a zero output
    saved, first = (torch.load(p, weights_only=True) for p in (summary.path, start))
    assert saved["config"] == first["config"]  # width and blocks come from the file, not the options
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in first["state_dict"].items())  # lr 0: unchanged
    with pytest.raises(BadInputError, match="made for model"):
        train_context(replace(opts, steps=STEPS - 1), log=lambda line: None)


def test_the_encoder_finds_the_scale_that_makes_the_pixels_cheapest() -> None:
    gen = torch.Generator().manual_seed(0)
    mean, b = 255 * torch.rand(3, 4000, generator=gen), 1 + 4 * torch.rand(3, 4000, generator=gen)
    true = torch.tensor([0.75, 1.0, 1.375])  # the network's b is off by these factors: k = 64, 128, 224
    u = torch.rand(3, 4000, generator=gen).clamp(1e-6, 1 - 1e-6)
    x = (mean + b * true[:, None] * torch.log(u / (1 - u))).round().clamp(0, 255).to(torch.uint8)  # logistic draws
    k = ctx.best_scales(x, mean, b)
    assert (k - torch.tensor([64, 128, 224])).abs().max() <= 12
    bits = [float(pixel_bits(x, mean, ctx.scaled(b, kk)).sum()) for kk in (k, torch.full((3,), ctx.SCALE_ZERO))]
    assert bits[0] < bits[1]
    assert torch.equal(ctx.scaled(b, torch.full((3,), ctx.SCALE_ZERO)), b)  # k = 128 is exactly s = 1


def test_the_first_context_layout_still_decodes(context_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `context` chunk (no scale bytes, s = 1), as the encoder wrote before the scales, decodes exactly."""
    monkeypatch.setattr(ctx, "best_scales", lambda x, mean, b: torch.full((3,), ctx.SCALE_ZERO))
    pixels = rgb_pixels(KODIM15)
    stream = read_stream(diffcodec.encode(pixels, model=context_model, seed=3))
    last = stream.chunks[-1]
    assert last.payload[ctx.HASH_SIZE : ctx.HASH_SIZE + 12] == bytes([ctx.SCALE_ZERO] * 12)
    first = Chunk(CODER_CONTEXT, last.payload[: ctx.HASH_SIZE] + last.payload[ctx.HASH_SIZE + 12 :], last.check)
    old = write_stream(stream.header, [*stream.chunks[:-1], first])
    assert np.array_equal(diffcodec.decode(old, model=context_model), pixels)


def test_channel_means_read_only_earlier_channels() -> None:
    m, kappa, x = torch.randn(3, 10), torch.rand(3, 10), torch.randn(3, 10)
    full = ctx.channel_means(m, kappa, x)
    for c in range(3):
        partial = x.clone()
        partial[c:] = 0.0
        assert torch.equal(ctx.channel_means(m, kappa, partial)[c], full[c])


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "stream.bin"
    path.write_bytes(data)
    return path


def test_train_context_cli_refuses_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train-context", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "not a directory" in result.output
    result = CliRunner().invoke(app, ["train-context", str(DATA), "--crop", "33"])
    assert result.exit_code != 0 and "even" in result.output


@pytest.mark.parametrize(("flag", "coder"), [("--context", CODER_CONTEXT_SCALED), ("--no-context", CODER_UQ)])
def test_encode_cli_context_flag(context_model: Path, tmp_path: Path, flag: str, coder: int) -> None:
    out = tmp_path / "x.dcz"
    result = CliRunner().invoke(app, ["encode", str(KODIM15), "-o", str(out), "--model", str(context_model),
                                      "--seed", "3", flag])
    assert result.exit_code == 0, result.output
    assert read_stream(out.read_bytes()).chunks[-1].coder == coder
    assert np.array_equal(diffcodec.decode(out.read_bytes(), model=context_model), rgb_pixels(KODIM15))
