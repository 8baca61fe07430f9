"""Fuzz the container parser and the decoder with mutated real files (short, deterministic: tools/fuzz.py
runs the long loop). Every case must decode to the encoder's rungs or fail with a DiffcodecError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import diffcodec
from diffcodec.bitstream import CHUNK_FRAME_SIZE, CODER_FILTERED, CODER_REC_STREAM, CODER_REC_STREAM_WIDE, read_stream
from diffcodec.errors import BitstreamError

from conftest import DEFAULT_WEIGHTS, KODIM01, release_file, rgb_pixels
from fuzzing import KINDS, Mutation, outcome

CROP = np.ascontiguousarray(rgb_pixels(KODIM01)[20:28, 30:40])  # 10 x 8 of a real photo: a small file


@pytest.fixture(scope="module")
def small(tiny_model: Path) -> tuple[bytes, list[np.ndarray]]:
    """A small real file and the pixels of its every rung."""
    data = diffcodec.encode(CROP, model=tiny_model, seed=3)
    return data, [r.pixels for r in diffcodec.decode_rungs(data, model=tiny_model)]


mutations = st.builds(
    Mutation,
    kind=st.sampled_from(KINDS),
    at=st.integers(min_value=0, max_value=2**16),
    value=st.binary(min_size=1, max_size=16),
    crafted=st.booleans(),
)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations)
def test_mutated_files_decode_right_or_fail_cleanly(mutation: Mutation, small: tuple[bytes, list[np.ndarray]],
                                                    tiny_model: Path) -> None:
    data, reference = small
    result = outcome(mutation.apply(data), tiny_model, reference, max_pixels=16 * CROP.shape[0] * CROP.shape[1])
    event(f"{mutation.label} -> {result}")  # pytest --hypothesis-show-statistics
    assert result in ("ok", "cut") or result.startswith("error: ")


def test_every_truncation_gives_its_best_rung_or_a_clear_error(small: tuple[bytes, list[np.ndarray]],
                                                               tiny_model: Path) -> None:
    """Cut after every byte: a cut inside the header is 'truncated header', any other cut decodes to the
    rungs of the complete chunks before it, each equal to the encoder's."""
    data, reference = small
    full = read_stream(data)
    for cut in range(len(data) + 1):
        if cut < full.header_size:
            with pytest.raises(BitstreamError, match="truncated header"):
                diffcodec.decode(data[:cut], model=tiny_model)
            continue
        rungs = 1 + sum(span.end <= cut for span in full.spans)  # rung 0 and one per complete chunk
        assert outcome(data[:cut], tiny_model, reference[:rungs], 2**28) == "ok", cut  # exactly those rungs


def test_every_flipped_bit_is_refused_or_reads_as_a_cut(small: tuple[bytes, list[np.ndarray]],
                                                        tiny_model: Path) -> None:
    """A flipped bit anywhere is refused by a CRC (or the magic/version check), except a chunk length that
    then points past the end of the file, which reads as a cut there: never a wrong image."""
    data, reference = small
    results = {outcome(Mutation("flip", bit // 8, bytes([bit % 8]), False).apply(data), tiny_model, reference, 2**28)
               for bit in range(8 * len(data))}
    assert "ok" not in results
    assert results <= {"cut"} | {r for r in results if r.startswith("error: BitstreamError")}


@pytest.mark.parametrize("release, coder", [("22b52cc", CODER_REC_STREAM), ("36dc43d", CODER_REC_STREAM_WIDE),
                                            ("ded25f7", CODER_FILTERED)])
def test_crafted_damage_inside_a_rec_stream_chunk_fails_cleanly(release: str, coder: int) -> None:
    """Bytes changed inside the one range coder of a grouped REC step, or inside a filtered chunk (its filter or its
    step), in a release file and the default model (CRCs recomputed, so only the decoder can tell): every case decodes
    to the encoder's rungs or fails with a DiffcodecError."""
    data = release_file(release)
    stream = read_stream(data)
    spans = [span for chunk, span in zip(stream.chunks, stream.spans) if chunk.coder == coder]
    assert spans
    reference = [r.pixels for r in diffcodec.decode_rungs(data)]
    rnd = np.random.default_rng(0)
    results = []
    for kind in ("flip", "set", "insert", "delete"):
        for _ in range(6):
            span = spans[int(rnd.integers(len(spans)))]
            at = span.offset + CHUNK_FRAME_SIZE + int(rnd.integers(span.size - CHUNK_FRAME_SIZE))
            damaged = Mutation(kind, at, bytes([int(rnd.integers(256))]), True).apply(data)
            results.append(outcome(damaged, DEFAULT_WEIGHTS, reference, 2**28))
    assert all(r in ("ok", "cut") or r.startswith("error: ") for r in results)
    assert sum(r.startswith("error: BitstreamError") for r in results) > len(results) // 2
