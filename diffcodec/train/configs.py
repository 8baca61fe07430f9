"""Named model configurations for training (`--config NAME`), or a JSON file with the same fields."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError
from ..nn import UNetConfig
from ..uqdm import ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # The shipped default model: 6.5 M parameters, T = 8.
    "default": ModelConfig(unet=UNetConfig(channels=(64, 96, 160, 256), blocks=(2, 2, 2, 2)), steps=8),
    # 0.9 M parameters: a faster model for CPU training.
    "small": ModelConfig(unet=UNetConfig(channels=(32, 48, 80, 128), blocks=(1, 1, 1, 1), emb_dim=64), steps=8),
    # For tests: a few thousand parameters, 3 steps.
    "tiny": ModelConfig(unet=UNetConfig(channels=(16, 16), blocks=(1, 1), emb_dim=32), steps=3),
}


def load_config(name_or_path: str) -> ModelConfig:
    """A preset name (default, small, tiny) or a JSON file holding ModelConfig.to_dict()."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise BadInputError(f"--config {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a JSON file")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise BadInputError(f"--config {path}: not a model configuration ({type(e).__name__}: {e})") from None
