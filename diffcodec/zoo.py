"""Model name or path -> loaded UQDM with its name and weights hash (stable ids, no list positions)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from .context import CONTEXT_FILE, PixelContext, earlier_fit_name, earlier_fits, load_context
from .errors import BadInputError, ModelError
from .refine import REFINE_FILE, Refiners, load_refiners
from .step_context import STEP_CONTEXT_FILE, StepNets, load_step_nets
from .steps import Coding
from .uqdm import UQDM, ModelConfig

DEFAULT_MODEL = "default"
WEIGHTS_FILE = "model.pt"
CODEC_FILE = "codec.json"  # beside a model file: the encoder's defaults for it, e.g. {"steps": 6, "coder": "uq"}
CODEC_KEYS = {"steps", *Coding.__dataclass_fields__}
FITTED_FILES = (CONTEXT_FILE, STEP_CONTEXT_FILE, REFINE_FILE)  # beside a model file: its small fitted networks


class _Fit(Protocol):
    model_hash: bytes  # the weights a fitted file (PixelContext, StepNets, Refiners) was made for


T = TypeVar("T", bound=_Fit)


def weights_dirs() -> list[Path]:
    """Where named models live: $DIFFCODEC_WEIGHTS (if set), then the repository's weights/."""
    dirs = [Path(os.environ["DIFFCODEC_WEIGHTS"])] if os.environ.get("DIFFCODEC_WEIGHTS") else []
    return dirs + [Path(__file__).resolve().parent.parent / "weights"]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to code, with the identity written into (and checked against) file headers."""

    name: str
    weights_hash: bytes
    path: Path
    model: UQDM
    default_steps: int  # how many of the model's steps a file codes unless told (codec.json, else all)
    coding: Coding  # how the encoder sends the steps unless told (codec.json, else plain UQ)
    context: PixelContext | None = None  # the pixel context network beside the model file (context.pt), if any
    step_nets: StepNets | None = None  # the step context networks beside it (step_context.pt), if any
    refiners: Refiners | None = None  # the decoder's post-filter networks beside it (refine.pt), if any
    earlier_contexts: tuple[PixelContext, ...] = ()  # earlier pixel context fits beside it (context.earlier_fits)
    earlier_step_nets: tuple[StepNets, ...] = ()  # earlier step context fits beside it
    earlier_refiners: tuple[Refiners, ...] = ()  # earlier post-filter fits beside it (read by step context fits)

    @property
    def context_fits(self) -> tuple[PixelContext, ...]:
        """Every pixel context fit a lossless chunk may name: context.pt (the encoder's), then the earlier ones."""
        return ((self.context,) if self.context is not None else ()) + self.earlier_contexts

    @property
    def step_fits(self) -> tuple[StepNets, ...]:
        """Every step context fit a grouped chunk may name: step_context.pt (the encoder's), then the earlier ones."""
        return ((self.step_nets,) if self.step_nets is not None else ()) + self.earlier_step_nets

    def identity(self) -> dict[str, str | int | None]:
        """What a measurement of this model depends on: its name, weights hash, steps coded, and the hashes (hex) of
        the pixel context, step context and post-filter fits the encoder uses (None where it has none)."""
        fit = lambda f: None if f is None else f.weights_hash.hex()  # noqa: E731
        return {"model": self.name, "weights_hash": self.weights_hash.hex(), "steps": self.default_steps,
                "context": fit(self.context), "step_context": fit(self.step_nets), "refine": fit(self.refiners)}

    def post_filter(self, weights_hash: bytes) -> Refiners | None:
        """The post-filter fit (refine.pt or an earlier one) of that weights hash, which a step context fit reads;
        None if none beside the model has it."""
        fits = (self.refiners, *self.earlier_refiners)
        return next((r for r in fits if r is not None and r.weights_hash == weights_hash), None)


def resolve(name_or_path: str | Path) -> tuple[str, Path]:
    """A zoo name (a folder under weights/) or a path to a model file or folder -> (name, file)."""
    p = Path(name_or_path)
    if p.is_dir():
        p = p / WEIGHTS_FILE
    if p.is_file():
        name = p.parent.name if p.name == WEIGHTS_FILE else p.stem
        return name, p
    for d in weights_dirs():
        f = d / str(name_or_path) / WEIGHTS_FILE
        if f.is_file():
            return str(name_or_path), f
    known = sorted({q.parent.name for q in installed()})
    choices = f"one of {', '.join(known)}" if known else "no named models are installed"
    raise ModelError(f"model {str(name_or_path)!r} not found: pass a model file or folder ({choices})")


def weights_hash(path: Path) -> bytes:
    """The first 8 bytes of the sha256 of the weights file."""
    return hashlib.sha256(path.read_bytes()).digest()[:8]


def installed() -> list[Path]:
    """Every installed model file (NAME/model.pt under the weights folders), in search order."""
    return [f for d in weights_dirs() if d.is_dir() for f in sorted(d.glob(f"*/{WEIGHTS_FILE}"))]


def find_by_hash(weights: bytes) -> Path | None:
    """The installed model file whose weights hash is `weights` (a file names its model AND its weights:
    when a model is retrained under the same name, files made with the old weights still find them)."""
    return next((f for f in installed() if weights_hash(f) == weights), None)


def load_file(path: Path, device: str | torch.device = "cpu") -> UQDM:
    """Build a UQDM from a model file (config + float16/32 state dict, loaded without pickle code)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = UQDM(ModelConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except Exception as e:  # any failure to read the file is a model error for the user
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{path}: not a diffcodec model file ({type(e).__name__}: {first_line})") from None
    return model.to(device).eval().requires_grad_(False)


def _codec_file(path: Path) -> dict:
    """The codec.json beside a model file as a dict ({} when there is none)."""
    sidecar = path.parent / CODEC_FILE
    if not sidecar.is_file():
        return {}
    try:
        entries = json.loads(sidecar.read_text())
    except ValueError as e:
        raise ModelError(f"{sidecar}: not a codec file ({type(e).__name__}: {e})") from None
    if not isinstance(entries, dict) or not set(entries) <= CODEC_KEYS:
        raise ModelError(f"{sidecar}: a codec file is one JSON object with entries among "
                         f"{', '.join(sorted(CODEC_KEYS))}")
    return entries


def default_steps(path: Path, model: UQDM) -> int:
    """The encoder's step count for a model: `steps` of the codec.json beside its file, else all its steps.
    (A file records its step count, so this default never changes how a file decodes.)"""
    steps = _codec_file(path).get("steps", model.steps)
    if not isinstance(steps, int) or not 1 <= steps <= model.steps:
        raise ModelError(f"{path.parent / CODEC_FILE}: steps must be an integer in [1, {model.steps}], got {steps!r}")
    return steps


def default_coding(path: Path, steps: int) -> Coding:
    """How the encoder sends a model's `steps` steps unless told: the coder entries of its codec.json, else plain
    UQ. (A file records its coder per chunk, so this default never changes how a file decodes.)"""
    entries = {k: v for k, v in _codec_file(path).items() if k != "steps"}
    try:
        coding = Coding(**entries)
        coding.coders(steps)
    except (BadInputError, TypeError) as e:
        raise ModelError(f"{path.parent / CODEC_FILE}: {e}") from None
    return coding


@lru_cache(maxsize=4)
def _load_cached(path: str, mtimes: tuple[float | None, ...], device: str) -> LoadedModel:
    p = Path(path)
    name = p.parent.name if p.name == WEIGHTS_FILE else p.stem
    model = load_file(p, device)
    digest = weights_hash(p)
    steps = default_steps(p, model)
    context = _beside(p, CONTEXT_FILE, digest, lambda f: load_context(f, weights_hash(f), device), "train-context")
    step_nets = _beside(p, STEP_CONTEXT_FILE, digest, lambda f: load_step_nets(f, weights_hash(f), device),
                        "train-step-context")
    refiners = _beside(p, REFINE_FILE, digest, lambda f: load_refiners(f, weights_hash(f), device), "train-refine")
    contexts = _earlier(p, CONTEXT_FILE, digest, load_context, device)
    post_filters = _earlier(p, REFINE_FILE, digest, load_refiners, device)
    readable = {None, *(r.weights_hash for r in (refiners, *post_filters) if r is not None)}
    _check_refined_steps(p, step_nets, readable)
    # earlier step context fits reading the U-Net's x_hat or a post-filter that is here
    step_fits = tuple(f for f in _earlier(p, STEP_CONTEXT_FILE, digest, load_step_nets, device)
                      if f.refine_hash in readable)
    return LoadedModel(name, digest, p, model, steps, default_coding(p, steps), context, step_nets, refiners,
                       contexts, step_fits, post_filters)


def _earlier_files(path: Path, files: tuple[str, ...] = FITTED_FILES) -> list[Path]:
    """The earlier fits of `files` kept beside a model file (context.earlier_fits)."""
    return [f for file in files for f in earlier_fits(path.parent, file)] if path.name == WEIGHTS_FILE else []


def _earlier(path: Path, file: str, model_hash: bytes, load: Callable[[Path, bytes, str], T],
             device: str) -> tuple[T, ...]:
    """The earlier fits of `file` beside a model file that were made for its weights, loaded (a file that does not
    read: ModelError)."""
    fits = (load(f, weights_hash(f), device) for f in _earlier_files(path, (file,)))
    return tuple(fit for fit in fits if fit.model_hash == model_hash)


def _beside(path: Path, file: str, model_hash: bytes, load: Callable[[Path], Any], command: str) -> Any:
    """A context file beside a model file, loaded, if there is one; refused if it was trained for other weights."""
    f = path.parent / file
    if path.name != WEIGHTS_FILE or not f.is_file():
        return None
    context = load(f)
    if context.model_hash != model_hash:
        raise ModelError(f"{f} was trained for weights {context.model_hash.hex()}, but {path} has "
                         f"{model_hash.hex()}: retrain it (diffcodec {command}) or remove it")
    return context


def _check_refined_steps(path: Path, step_nets: StepNets | None, readable: set[bytes | None]) -> None:
    """Refuse step context networks that read a post-filter the model folder does not hold (`readable`: the weights
    hashes of refine.pt and its earlier fits, and None)."""
    wanted = None if step_nets is None else step_nets.refine_hash
    if wanted in readable:
        return
    assert wanted is not None
    raise ModelError(f"{path.parent / STEP_CONTEXT_FILE} reads the post-filter {wanted.hex()}, but neither "
                     f"{path.parent / REFINE_FILE} nor {earlier_fit_name(REFINE_FILE, wanted)} beside it has it: put "
                     f"that file back, or refit the step context (diffcodec train-step-context)")


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str = "cpu") -> LoadedModel:
    """Load (and cache) a model by zoo name or path."""
    name, path = resolve(name_or_path)
    # a new model, context.pt, step_context.pt, refine.pt or earlier fit of one of them is seen at once
    mtimes = tuple(f.stat().st_mtime if f.is_file() else None
                   for f in (path, *(path.parent / side for side in FITTED_FILES), *_earlier_files(path)))
    loaded = _load_cached(str(path.resolve()), mtimes, device)
    return replace(loaded, name=name)
