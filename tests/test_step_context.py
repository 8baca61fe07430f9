"""The step context networks: train-step-context, grouped steps that decode exactly, and their failures."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffcodec
from diffcodec import step_context as sc
from diffcodec import steps
from diffcodec.rec.coder import PartWriter, RecStep
from diffcodec.bitstream import (CODER_REC_ESCAPE, CODER_REC_ESCAPE_GROUPED, CODER_REC_ESCAPE_PACKED,
                                 CODER_REC_STREAM_WIDE, CODER_UQ, CODER_UQ_GROUPED, CODER_UQ_PACKED, Chunk,
                                 pack_varints, read_stream, write_stream)
from diffcodec.cli import app
from diffcodec.context import earlier_fit_name
from diffcodec.errors import BadInputError, BitstreamError, ModelError
from diffcodec.train.step_context import StepContextOptions, train_step_context
from diffcodec.zoo import load_model

from conftest import KODIM01, KODIM15, copy_default, release_file, rgb_pixels

STEPS = 5  # the default model's codec.json: all five steps by Gaussian REC, chunks out of reach by UQ (rec_escape)
GROUPED_IDS = {None: [CODER_REC_STREAM_WIDE] * 5, 4: [CODER_REC_STREAM_WIDE] * 4 + [CODER_UQ_PACKED]}
PLAIN_IDS = {None: [CODER_REC_ESCAPE] * 5, 4: [CODER_REC_ESCAPE] * 4 + [CODER_UQ]}  # by rec_steps


@pytest.fixture(scope="module")
def grouped_model(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default model with step context networks (8 channels, 1 block) fitted briefly on two real
    crops, for steps 3, 4 and 5."""
    folder = copy_default(tmp_path_factory.mktemp("sc") / "default")
    opts = StepContextOptions(data=photos, val=photos, model=str(folder), steps=(3, 4, 5), iters=40, batch=4,
                              crop=32, pool=16, val_crops=8, lr=3e-3, width=8, blocks=1, eval_every=40)
    summary = train_step_context(opts, log=lambda line: None)
    assert summary.path == folder / sc.STEP_CONTEXT_FILE
    assert sorted(summary.context_bits) == [3, 4, 5]
    assert summary.context_bits[5] < summary.plain_bits[5]  # the fit learnt something
    return folder


@pytest.fixture
def always_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Group every step that has a network, however small (the test images are small)."""
    monkeypatch.setattr(sc, "MIN_STEP_BITS", 0)


def test_the_fitted_networks_are_found_beside_the_model(grouped_model: Path) -> None:
    loaded = load_model(grouped_model)
    assert loaded.step_nets is not None and sorted(loaded.step_nets.nets) == [2, 3, 4]  # step indices
    assert loaded.step_nets.model_hash == loaded.weights_hash


@pytest.mark.parametrize("rec_steps", [None, 4])  # the default (every step by REC), and step 5 by UQ
def test_grouped_steps_decode_exactly(grouped_model: Path, always_grouped: None, rec_steps: int | None) -> None:
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[3:64, 5:52])  # 61 x 47: groups of unequal size
    coding = {} if rec_steps is None else {"coder": "hybrid", "rec_steps": rec_steps, "posterior": "gaussian"}
    data = diffcodec.encode(pixels, model=grouped_model, seed=3, **coding)
    assert [c.coder for c in read_stream(data).chunks[:STEPS]] == [CODER_REC_ESCAPE] * 2 + GROUPED_IDS[rec_steps][2:]
    rungs = diffcodec.decode_rungs(data, model=grouped_model)  # every rung is checked against the encoder's
    assert np.array_equal(rungs[-1].pixels, pixels)
    plain = diffcodec.encode(pixels, model=grouped_model, seed=3, context=False, **coding)
    assert [c.coder for c in read_stream(plain).chunks[:STEPS]] == PLAIN_IDS[rec_steps]


def first_layout(chunk: Chunk) -> Chunk:
    """A packed grouped chunk rewritten in the first layout: u32 lengths, whole parts, the first layout's coder id."""
    parts = sc.grouped_parts(chunk.coder, chunk.payload)
    body = b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return Chunk(sc.GROUPED[sc.part_coder(chunk.coder)], chunk.payload[: sc.HASH_SIZE] + body, chunk.check)


def test_the_first_grouped_layout_still_decodes(grouped_model: Path, always_grouped: None) -> None:
    """Files written before the packed layout: the same parts with u32 lengths (UQ parts here; the release files of
    test_releases.py hold REC parts in the first and the packed layout)."""
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[3:64, 5:52])
    stream = read_stream(diffcodec.encode(pixels, model=grouped_model, seed=3, coder="hybrid", rec_steps=4,
                                          posterior="gaussian"))
    new = stream.chunks[STEPS - 1]
    was = first_layout(new)
    assert (new.coder, was.coder) == (CODER_UQ_PACKED, CODER_UQ_GROUPED)
    saved = sum(4 - len(pack_varints([len(p)])) for p in sc.grouped_parts(new.coder, new.payload))
    assert len(was.payload) - len(new.payload) == saved > 0
    old = [*stream.chunks[: STEPS - 1], was, *stream.chunks[STEPS:]]
    assert np.array_equal(diffcodec.decode(write_stream(stream.header, old), model=grouped_model), pixels)


def test_a_release_file_rewritten_in_the_first_layout_decodes_alike() -> None:
    """The packed REC chunk of a release file, its parts given back their prefix bytes and u32 lengths."""
    stream = read_stream(release_file("27e5f68"))
    old = [first_layout(c) if c.coder == CODER_REC_ESCAPE_PACKED else c for c in stream.chunks]
    assert CODER_REC_ESCAPE_GROUPED in [c.coder for c in old]
    data = write_stream(stream.header, old)
    assert len(data) > len(write_stream(stream.header, stream.chunks))
    assert np.array_equal(diffcodec.decode_rungs(data)[-1].pixels, rgb_pixels(KODIM01))  # every rung checked


def skipped_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of chunks each REC part written from now on sends by UQ (filled as the encoder writes them)."""
    counts: list[int] = []
    write = PartWriter.write

    def spy(self: PartWriter, sent: RecStep, widening: int = 0) -> float:
        counts.append(len(sent.skipped))
        return write(self, sent, widening)

    monkeypatch.setattr(PartWriter, "write", spy)
    return counts


def test_grouped_steps_with_chunks_sent_by_uq_decode_exactly(grouped_model: Path, always_grouped: None,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a small rec_escape many chunks of the grouped parts go by UQ; every rung still decodes as the encoder saw it."""
    folder = tmp_path / "m"
    shutil.copytree(grouped_model, folder)
    coding = json.loads((folder / "codec.json").read_text())
    (folder / "codec.json").write_text(json.dumps({**coding, "rec_escape": 0.25}))
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[3:64, 5:52])
    skipped = skipped_chunks(monkeypatch)
    data = diffcodec.encode(pixels, model=folder, seed=3)
    chunks = read_stream(data).chunks[:STEPS]
    assert [c.coder for c in chunks] == [CODER_REC_ESCAPE] * 2 + GROUPED_IDS[None][2:]
    assert len(skipped) == 3 * sc.PARTS and all(sum(skipped[i : i + sc.PARTS]) > 0 for i in (0, 12, 24))
    assert np.array_equal(diffcodec.decode_rungs(data, model=folder)[-1].pixels, pixels)
    assert data != diffcodec.encode(pixels, model=grouped_model, seed=3)


def test_escaped_elements_under_a_widened_prior_cost_fewer_bits(grouped_model: Path, always_grouped: None,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks skipped where the prior is far too sure (here: 64 times too sure in the top rows, on both sides) go by UQ
    under its scale widened per part: the file is smaller than with no widening (w = 0, still a valid rec-stream-wide
    file), and both decode exactly."""
    group_prior = sc.group_prior

    def too_sure(*args: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sigma, kappa = group_prior(*args)
        sigma = sigma.clone()
        sigma[..., :8, :] /= 64
        return mu, sigma, kappa

    monkeypatch.setattr(sc, "group_prior", too_sure)
    folder = grouped_model
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[3:64, 5:52])
    chosen: list[int] = []
    best = steps.best_widening
    monkeypatch.setattr(steps, "best_widening", lambda *escapes: chosen.append(best(*escapes)) or chosen[-1])
    data = diffcodec.encode(pixels, model=folder, seed=3)
    monkeypatch.setattr(steps, "best_widening", lambda *escapes: 0)
    unwidened = diffcodec.encode(pixels, model=folder, seed=3)
    assert max(chosen) > 0 and len(data) < len(unwidened)
    for coded in (data, unwidened):
        assert np.array_equal(diffcodec.decode_rungs(coded, model=folder)[-1].pixels, pixels)


def test_the_widening_is_the_cheapest() -> None:
    """w minimizes the escaped symbols' information content: none for symbols the prior expects, some for a spread
    far wider than its scale."""
    rnd = np.random.default_rng(0)
    mean, scale = torch.zeros(4000), torch.full((4000,), 0.5)
    expected = np.round(rnd.logistic(0.0, 0.5, 4000)).astype(np.int64)
    assert steps.best_widening(expected, mean, scale) == 0
    spread = np.round(rnd.logistic(0.0, 8.0, 4000)).astype(np.int64)
    w = steps.best_widening(spread, mean, scale)
    assert 0 < w < steps.MAX_WIDENING and abs(w - steps.WIDENINGS_PER_OCTAVE * 4) <= 2  # 8 = 0.5 x 2^4


def test_a_one_row_image_with_empty_groups_decodes_exactly(grouped_model: Path, always_grouped: None) -> None:
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[:1, :200])  # groups of odd rows are empty
    data = diffcodec.encode(pixels, model=grouped_model, seed=3)
    assert [c.coder for c in read_stream(data).chunks[:STEPS]] == [CODER_REC_ESCAPE] * 2 + GROUPED_IDS[None][2:]
    assert np.array_equal(diffcodec.decode(data, model=grouped_model), pixels)


def test_the_context_makes_the_fitted_step_smaller(grouped_model: Path, always_grouped: None) -> None:
    pixels = rgb_pixels(KODIM01)
    result = diffcodec.encode_report(pixels, model=grouped_model, seed=3)
    plain = diffcodec.encode_report(pixels, model=grouped_model, seed=3, context=False)
    # step 5 (UQ) over its KL: the refined prior spends fewer bits than the plain one (framing included)
    assert result.rungs[5].ideal_bits < plain.rungs[5].ideal_bits


def test_a_small_step_is_sent_plainly(grouped_model: Path) -> None:
    data = diffcodec.encode(rgb_pixels(KODIM01)[:16, :16], model=grouped_model, seed=3)
    assert [c.coder for c in read_stream(data).chunks[:STEPS]] == PLAIN_IDS[None]


def test_a_decoder_without_the_step_context_says_so(grouped_model: Path, always_grouped: None,
                                                    tmp_path: Path) -> None:
    data = diffcodec.encode(KODIM15, model=grouped_model, seed=3)
    bare = copy_default(tmp_path / "default")
    with pytest.raises(ModelError, match="step context network"):
        diffcodec.decode(data, model=bare)
    # the rungs before the first grouped step need no network
    assert np.array_equal(diffcodec.decode(data, model=bare, rung=2),
                          diffcodec.decode(data, model=grouped_model, rung=2))
    stream = tmp_path / "stream.bin"
    stream.write_bytes(data)
    result = CliRunner().invoke(app, ["decode", str(stream), "--model", str(bare), "-o", str(tmp_path / "out.png")])
    assert result.exit_code != 0 and "step context network" in result.output and "--rung 2" in result.output
    assert not (tmp_path / "out.png").exists()


def test_other_step_context_weights_are_refused(grouped_model: Path, always_grouped: None, tmp_path: Path) -> None:
    data = diffcodec.encode(KODIM15, model=grouped_model, seed=3)
    other = copy_default(tmp_path / "default")
    loaded = load_model(grouped_model)
    assert loaded.step_nets is not None
    nets = {i: net for i, net in loaded.step_nets.nets.items()}
    with torch.no_grad():
        nets[4].out.bias.add_(0.01)
    sc.save_step_nets(other / sc.STEP_CONTEXT_FILE, nets, loaded.weights_hash)
    with torch.no_grad():
        nets[4].out.bias.sub_(0.01)
    with pytest.raises(ModelError, match="step context weights"):
        diffcodec.decode(data, model=other)


def test_a_refit_keeps_the_earlier_fit_so_older_files_decode(grouped_model: Path, always_grouped: None, photos: Path,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "default"
    shutil.copytree(grouped_model, folder)
    pixels = np.ascontiguousarray(rgb_pixels(KODIM15)[:40, :48])
    old = diffcodec.encode(pixels, model=folder, seed=3)
    first = load_model(folder).step_nets
    assert first is not None
    opts = StepContextOptions(data=photos, val=photos, model=str(folder), steps=(3, 4, 5), iters=2, batch=4, crop=32,
                              pool=8, val_crops=4, lr=3e-3, width=8, blocks=1, eval_every=2, seed=1)
    train_step_context(opts, log=lambda line: None)  # writes step_context.pt beside the model
    kept = folder / earlier_fit_name(sc.STEP_CONTEXT_FILE, first.weights_hash)
    loaded = load_model(folder)
    assert loaded.step_nets is not None and loaded.step_nets.weights_hash != first.weights_hash
    assert kept.is_file() and [f.weights_hash for f in loaded.earlier_step_nets] == [first.weights_hash]
    assert np.array_equal(diffcodec.decode_rungs(old, model=folder)[-1].pixels, pixels)  # every rung checked
    new = read_stream(diffcodec.encode(pixels, model=folder, seed=3))
    last = new.chunks[STEPS - 1]  # the encoder's is the refit
    assert last.payload[: sc.hash_size(last.coder)] == loaded.step_nets.weights_hash[: sc.hash_size(last.coder)]
    # an earlier fit made for other weights is left out; without the kept fit, the old file's grouped steps are
    # refused, naming the file that would decode them
    sc.save_step_nets(folder / earlier_fit_name(sc.STEP_CONTEXT_FILE, bytes(8)), first.nets, bytes(8))
    kept.unlink()
    assert load_model(folder).earlier_step_nets == ()
    assert np.array_equal(diffcodec.decode(old, model=folder, rung=2), diffcodec.decode(old, model=grouped_model, rung=2))
    with pytest.raises(ModelError, match=rf"step_context\.{first.weights_hash[:4].hex()}\*\.pt is not beside"):
        diffcodec.decode(old, model=folder)


def test_a_step_context_for_other_weights_is_refused(grouped_model: Path, other_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(other_model, folder / "model.pt")
    shutil.copy(grouped_model / sc.STEP_CONTEXT_FILE, folder / sc.STEP_CONTEXT_FILE)
    with pytest.raises(ModelError, match="trained for weights"):
        load_model(folder)


@pytest.mark.parametrize("rec_steps", [None, 4])
def test_a_corrupt_grouped_chunk_is_an_error(grouped_model: Path, always_grouped: None, rec_steps: int | None) -> None:
    pixels = rgb_pixels(KODIM15)
    coding = {} if rec_steps is None else {"coder": "hybrid", "rec_steps": rec_steps, "posterior": "gaussian"}
    stream = read_stream(diffcodec.encode(pixels, model=grouped_model, seed=3, **coding))
    last_step = stream.chunks[STEPS - 1]
    assert last_step.coder == GROUPED_IDS[rec_steps][-1]
    payload = last_step.payload
    # cut in the first length, inside the first part, just before the last part; one byte more
    for bad in (payload[:10], payload[:20], payload[:-1], payload + b"\0"):
        chunks = [*stream.chunks[: STEPS - 1], Chunk(last_step.coder, bad, last_step.check), *stream.chunks[STEPS:]]
        with pytest.raises(BitstreamError):
            diffcodec.decode(write_stream(stream.header, chunks), model=grouped_model)


def test_training_refuses_a_step_outside_the_chain(grouped_model: Path, photos: Path) -> None:
    opts = StepContextOptions(data=photos, val=photos, model=str(grouped_model), steps=(STEPS + 1,), iters=1)
    with pytest.raises(BadInputError, match="--step must be in"):
        train_step_context(opts, log=lambda line: None)


def _refit_step_5(model: Path, photos: Path, out: Path, **kw: object) -> StepContextOptions:
    """Options of a one-iteration refit of step 5 at learning rate 0 from the model's step context file (or `init`)."""
    return StepContextOptions(data=photos, val=photos, model=str(model), steps=(5,), iters=1, batch=4, crop=32,
                              pool=16, val_crops=8, lr=0.0, out=out,
                              **{"init": model / sc.STEP_CONTEXT_FILE, **kw})  # type: ignore[arg-type]


def test_training_can_start_from_a_step_context_file(grouped_model: Path, photos: Path, tmp_path: Path) -> None:
    start = grouped_model / sc.STEP_CONTEXT_FILE
    summary = train_step_context(_refit_step_5(grouped_model, photos, tmp_path / "more.pt"), log=lambda line: None)
    assert summary.context_bits[5] < summary.plain_bits[5]  # the start was the fitted network, not a zero output
    saved, first = (torch.load(p, weights_only=True)["nets"] for p in (summary.path, start))
    assert sorted(saved) == sorted(first) == ["2", "3", "4"]  # steps 3 and 4 kept from the start: a whole file
    for i in saved:  # the refitted step at lr 0 and the kept ones: config and weights as they were
        assert saved[i]["config"] == first[i]["config"]  # width and blocks come from the file
        assert all(torch.equal(saved[i]["state_dict"][k], v) for k, v in first[i]["state_dict"].items())
    with pytest.raises(BadInputError, match="made for model"):
        train_step_context(StepContextOptions(data=photos, val=photos, model=str(grouped_model), steps=(1,), iters=1,
                                              init=start), log=lambda line: None)


def test_a_refit_of_some_steps_refuses_a_start_that_reads_another_post_filter(grouped_model: Path, photos: Path,
                                                                             tmp_path: Path) -> None:
    """Kept steps would name a post-filter they were not fitted on: refused, unless every step is refitted."""
    start = load_model(grouped_model).step_nets
    other = tmp_path / "other_refine.pt"
    sc.save_step_nets(other, start.nets, start.model_hash, refine_hash=bytes(8))
    with pytest.raises(BadInputError, match="refit every step"):
        train_step_context(_refit_step_5(grouped_model, photos, tmp_path / "more.pt", init=other), log=lambda line: None)
    refit_all = dataclasses.replace(_refit_step_5(grouped_model, photos, tmp_path / "all.pt", init=other), steps=(3, 4, 5))
    assert sorted(train_step_context(refit_all, log=lambda line: None).context_bits) == [3, 4, 5]


def test_a_refit_can_deepen_its_networks_from_where_they_were(grouped_model: Path, photos: Path,
                                                              tmp_path: Path) -> None:
    kept = train_step_context(_refit_step_5(grouped_model, photos, tmp_path / "kept.pt"), log=lambda line: None)
    deeper = train_step_context(_refit_step_5(grouped_model, photos, tmp_path / "deeper.pt", blocks=3),
                                log=lambda line: None)
    assert torch.load(deeper.path, weights_only=True)["nets"]["4"]["config"] == {"width": 8, "blocks": 3}
    assert deeper.context_bits[5] == kept.context_bits[5]  # the added blocks start as the identity
    assert deeper.parameters > kept.parameters
    for kw, match in [({"blocks": 0}, "can add blocks, not remove them"), ({"width": 16}, "has 8 channels")]:
        with pytest.raises(BadInputError, match=match):
            train_step_context(_refit_step_5(grouped_model, photos, tmp_path / "bad.pt", **kw), log=lambda line: None)


def test_part_streams_are_apart_from_every_step() -> None:
    ids = {sc.rng.part_step(step, part) for step in range(64) for part in range(sc.PARTS)}
    assert len(ids) == 64 * sc.PARTS and min(ids) > 2**16


def test_train_step_context_cli_refuses_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train-step-context", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "not a directory" in result.output
    result = CliRunner().invoke(app, ["train-step-context", str(tmp_path), "--crop", "33"])
    assert result.exit_code != 0 and "--crop must be even" in result.output
