"""Files written by earlier releases of the default model decode exactly: the context, step context and post-filter
fits they name are kept beside the model (`context.HASH.pt`, `step_context.HASH.pt`, `refine.HASH.pt`).

tests/data/releases/COMMIT.dcz is tests/data/kodim01_64.png encoded with `--seed 1` by the code and weights of
that commit (0feee64: pixel context for 6 steps; a1c4899 and acf4339: 5 steps, pixel context refits; 1d0a700: the
first step context; 4d12d17: the step context on the post-filter; 189cc2c: REC steps with chunks sent by UQ; f875e4d: the step context
trained further; dc92596: steps 4-5 of the step context deepened; 0e6cf9b: steps 3-5 of it deepened and trained
further; 27e5f68: steps 4-5 of it refitted on the post-filter shown, grouped steps in the packed layout; 22b52cc:
grouped REC steps in one range coder, `rec-stream`; 36dc43d: `rec-stream-wide`; f4b917e: margin 3 at every step;
ded25f7: rung filters, every step chunk `filtered`: that one encoded with the model's codec.json at `filter_slope`
0.05, so that a 64 x 64 crop carries them; 6538dc8: steps 4-5 of the step context refitted on the post-filter
whose rungs 3-4 were trained further; f3e191a: step 4 of it refitted on the post-filter whose rung 3 was trained
further; 8b3a817: step 5 of it refitted on the post-filter whose rung 4 was trained further; a9d3eef: the same step
context naming the post-filter whose rung 5 was trained further; ba996a5: steps 4-5 of it trained further on both photo
sizes, naming the post-filter whose rung 5 was trained further again).

The U-Net's float kernels differ between CPU kinds, and so do the pixels it gives. A file decodes exactly only where its
rung 0 (the U-Net's x_hat from the seed) comes out as on the machine that wrote it. All files up to f3e191a were
written on one kind of CPU, and 8b3a817, a9d3eef and ba996a5 on another (AMD EPYC with AVX2 and no AVX-512). A file
whose rung 0 differs here is skipped, with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import diffcodec
from diffcodec.bitstream import read_stream
from diffcodec.zoo import load_model

from conftest import DEFAULT_WEIGHTS, KODIM01, release_file, rgb_pixels


RELEASES = ("0feee64", "a1c4899", "acf4339", "1d0a700", "4d12d17", "189cc2c", "f875e4d", "dc92596", "0e6cf9b", "27e5f68",
            "22b52cc", "36dc43d", "f4b917e", "ded25f7", "6538dc8", "f3e191a", "8b3a817", "a9d3eef", "ba996a5")


@pytest.mark.parametrize("release", RELEASES)
def test_a_file_of_an_earlier_release_decodes_exactly(release: str) -> None:
    data = release_file(release)
    assert read_stream(data).header.weights_hash == load_model(DEFAULT_WEIGHTS).weights_hash
    rungs = diffcodec.decode_rungs(data)  # every rung is checked against the encoder's
    assert np.array_equal(rungs[-1].pixels, rgb_pixels(KODIM01))
