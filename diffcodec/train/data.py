"""Random crops from an in-memory uint8 cache of a folder of photos."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder (sorted, not recursive)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def split_holdout(paths: list[Path], every: int = 25) -> tuple[list[Path], list[Path]]:
    """Deterministic train / validation split by a hash of the file name (1 in `every` held out)."""
    def held(p: Path) -> bool:
        return int(hashlib.sha256(p.name.encode()).hexdigest(), 16) % every == 0

    return [p for p in paths if not held(p)], [p for p in paths if held(p)]


def _load(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInputError(f"{path}: not a readable image ({e})") from None


class CropCache:
    """All images decoded once to uint8 (3, H, W) tensors; `sample` draws random flipped crops."""

    def __init__(self, paths: list[Path], crop: int, device: torch.device | str = "cpu", workers: int = 8) -> None:
        with ThreadPoolExecutor(workers) as pool:
            images = list(pool.map(_load, paths))
        self.images = [im.to(device) for im in images if min(im.shape[1:]) >= crop]
        self.skipped = len(images) - len(self.images)  # photos smaller than a crop
        if not self.images:
            raise BadInputError(f"no photo of at least {crop} x {crop} pixels among {len(paths)}: lower --crop")
        self.crop = crop
        self.device = device

    def sample(self, batch: int, generator: np.random.Generator) -> torch.Tensor:
        """(batch, 3, crop, crop) uint8 crops with random horizontal flips."""
        c = self.crop
        out = []
        for j in generator.integers(0, len(self.images), batch):
            im = self.images[j]
            y = generator.integers(0, im.shape[1] - c + 1)
            x = generator.integers(0, im.shape[2] - c + 1)
            crop = im[:, y : y + c, x : x + c]
            out.append(crop.flip(2) if generator.random() < 0.5 else crop)
        return torch.stack(out)


def train_val_crops(data: Path, val: Path | None, crop: int, pool: int, val_crops: int,
                    generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`pool` training and `val_crops` held-out uint8 crops: held out are 1 in 25 photos of `data` by name hash, or
    the photos of `val` (then all of `data` trains)."""
    train_paths, val_paths = split_holdout(list_images(data))
    if val is not None:
        train_paths, val_paths = train_paths + val_paths, list_images(val)
    if not train_paths or not val_paths:
        raise BadInputError(f"{data}: needs photos both to train on and to hold out (1 in 25, or --val), "
                            f"found {len(train_paths)} and {len(val_paths)}")
    return CropCache(train_paths, crop).sample(pool, generator), CropCache(val_paths, crop).sample(val_crops, generator)
