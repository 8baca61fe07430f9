"""Shared fixtures: tiny random models, the real test crops, and a cache of encoded streams.

Lossless round trips are exact for any model, so a tiny random U-Net (3 steps) tests the whole data
path of the codec and the CLI in milliseconds; the trained model is only needed for rates.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# One intra-op thread: on a small, shared machine the default (one per core) makes each tiny
# convolution spin-wait for a busy core, ~100x slower. Results must not depend on it: the
# subprocess tests of test_cli.py run the console script with the default thread count.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
KODIM01 = DATA / "kodim01_64.png"  # 64 x 64
KODIM15 = DATA / "kodim15_64.png"  # 64 x 64
KODIM20 = DATA / "kodim20_53x37.png"  # W 53, H 37
KODIM08 = DATA / "kodim08_300x17.png"  # W 300, H 17
SAMPLE = ROOT / "docs" / "sample.png"  # 256 x 256
DEFAULT_WEIGHTS = ROOT / "weights" / "default" / "model.pt"

TINY_NAME = "tiny-test"  # the zoo name written into headers: the model file is TINY_NAME/model.pt
TINY_STEPS = 3  # T: a file holds T + 1 chunks, decode gives rungs 0 .. T + 1


@pytest.fixture(scope="module")
def bench_scripts() -> Iterator[Path]:
    """bench/ on sys.path while a module's tests run (it is a folder of scripts, not an installed package)."""
    sys.path.insert(0, str(ROOT / "bench"))
    yield ROOT / "bench"
    sys.path.remove(str(ROOT / "bench"))


def release_file(release: str) -> bytes:
    """tests/data/releases/RELEASE.dcz, or a skip where this machine cannot decode it: the U-Net's float kernels differ
    between CPU kinds, and a file decodes exactly only where its rung 0 (x_hat from the seed) comes out as on the
    machine that wrote it (test_releases.py says which kind wrote which file)."""
    import diffcodec

    data = (DATA / "releases" / f"{release}.dcz").read_bytes()
    try:
        diffcodec.decode_image(data, rung=0)
    except diffcodec.ReconstructionCheckError as e:
        if e.rung == 0:
            pytest.skip(f"{release}.dcz was written on a CPU whose U-Net gives other rung-0 pixels than this one")
        raise
    return data


def rgb_pixels(path: Path) -> np.ndarray:
    """The pixels of an image file as (H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def copy_default(folder: Path) -> Path:
    """A new model folder holding the default model's weights and codec.json only (no context networks), its
    encoder sending no rung filters (no `filter_slope`): the chunks these tests take apart and compare stay the
    step coders' own (test_rung_filter.py covers the `filtered` wrapping)."""
    folder.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, folder / "model.pt")
    entries = json.loads((DEFAULT_WEIGHTS.parent / "codec.json").read_text())
    entries.pop("filter_slope", None)
    (folder / "codec.json").write_text(json.dumps(entries))
    return folder


def model_with_codec_file(model: Path, folder: Path, entries: dict) -> Path:
    """A copy of a model file in a new folder, with a codec.json of `entries` beside it: its path."""
    folder.mkdir()
    shutil.copy(model, folder / "model.pt")
    (folder / "codec.json").write_text(json.dumps(entries))
    return folder / "model.pt"


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two real 64 x 64 photo crops, for the context fits."""
    folder = tmp_path_factory.mktemp("photos")
    for f in (KODIM01, KODIM15):
        shutil.copy(f, folder / f.name)
    return folder


def _tiny_model(path: Path, seed: int) -> Path:
    from diffcodec.nn import UNetConfig
    from diffcodec.train.loop import export_weights
    from diffcodec.uqdm import UQDM, ModelConfig

    torch.manual_seed(seed)
    model = UQDM(ModelConfig(unet=UNetConfig(channels=(16, 16), blocks=(1, 1), emb_dim=32), steps=TINY_STEPS))
    path.parent.mkdir(parents=True)
    export_weights(model, path)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like weights/: it holds TINY_NAME/model.pt (pass it as DIFFCODEC_WEIGHTS)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> Path:
    """Path of a tiny random model file (seed 0); pass as model= or --model."""
    return _tiny_model(models_dir / TINY_NAME / "model.pt", seed=0)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same name and architecture as `tiny_model`, other weights (seed 1): a wrong model for its streams."""
    return _tiny_model(tmp_path_factory.mktemp("other") / TINY_NAME / "model.pt", seed=1)


@pytest.fixture(scope="session")
def encoded(tiny_model: Path) -> Callable[[Path], bytes]:
    """encoded(image_path) -> the bytes of that image coded with the tiny model (seed 7), cached."""
    import diffcodec

    cache: dict[Path, bytes] = {}

    def get(path: Path) -> bytes:
        if path not in cache:
            cache[path] = diffcodec.encode(path, model=tiny_model, seed=7)
        return cache[path]

    return get


@pytest.fixture(scope="session")
def stream20(encoded: Callable[[Path], bytes]) -> bytes:
    """kodim20 (53 x 37) coded with the tiny model: the stream most tests take apart."""
    return encoded(KODIM20)


def make_mode_image(tmp_path: Path, mode: str, source: Path = KODIM20) -> Path:
    """A PNG in tmp_path made from a real crop: mode "L", "P" (adaptive palette) or "1"."""
    with Image.open(source) as im:
        rgb = im.convert("RGB")
    if mode == "P":
        out = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        out = rgb.convert(mode)
    path = tmp_path / f"{source.stem}_{mode}.png"
    out.save(path)
    with Image.open(path) as check:
        assert check.mode == mode  # the PNG really holds that mode
    return path


def one_pixel_image(tmp_path: Path) -> Path:
    """A 1 x 1 PNG: one pixel cropped from a real photo."""
    path = tmp_path / "one_pixel.png"
    with Image.open(KODIM01) as im:
        im.convert("RGB").crop((10, 20, 11, 21)).save(path)
    return path


def make_unsupported_image(tmp_path: Path, mode: str) -> Path:
    """A file of an unsupported mode ("RGBA", "I;16", "CMYK", "LA", "I", "P+transparency") made from a
    real crop: PNG where PNG can hold the mode, else JPEG (CMYK) or TIFF (32-bit I)."""
    with Image.open(KODIM20) as im:
        rgb = im.convert("RGB")
    if mode == "I;16":
        im16 = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        path = tmp_path / "grey16.png"
        im16.save(path)
        return path
    if mode == "CMYK":
        path = tmp_path / "cmyk.jpg"
        rgb.convert("CMYK").save(path)
        return path
    if mode == "P+transparency":
        path = tmp_path / "transparent.png"
        rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(path, transparency=0)
        return path
    path = tmp_path / (f"{mode}.tif" if mode == "I" else f"{mode}.png")  # PNG cannot hold 32-bit "I"
    rgb.convert(mode).save(path)
    return path
