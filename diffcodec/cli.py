"""The `diffcodec` command: parse, call the library, report. Errors become one line on stderr.

Exit codes: 0 success; 1 the input, stream or model was refused (missing file, not an image,
not a diffcodec file, corrupt or truncated header, wrong model, output exists), or an unexpected
failure (reported as an internal error); 2 usage errors. `--debug` (or DIFFCODEC_DEBUG=1) lets the
exception and its traceback through instead.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import codec
from .bitstream import CODERS, read_stream, unwrap_filtered
from .errors import BadInputError, DiffcodecError
from .image import to_pil
from .train.command import train_command, train_context_command, train_refine_command, train_step_context_command
from .zoo import DEFAULT_MODEL, load_model

app = typer.Typer(
    help="diffcodec: a progressive image codec built on a diffusion model. One file holds a ladder of "
    "rungs, from a rough preview to the exact original.",
    epilog="Example: diffcodec encode photo.png && diffcodec decode photo.dcz --rung 3.  "
    "Exit codes: 0 success, 1 refused input, stream or model (or an internal error), 2 usage error.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

class Coder(str, Enum):
    """How the diffusion steps are sent (see steps.CODER_CHOICES)."""

    uq = "uq"
    rec = "rec"
    hybrid = "hybrid"


class Posterior(str, Enum):
    """The posterior family a REC step sends (see rec.FAMILIES)."""

    uniform = "uniform"
    gaussian = "gaussian"


class Recon(str, Enum):
    """Reconstructions of a lossy rung (see codec.RECONS)."""

    denoise = "denoise"
    unrefined = "unrefined"
    flow = "flow"
    ancestral = "ancestral"
    ensemble = "ensemble"


_run = {"debug": False}  # this invocation's global options, set by _options


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="show the exception and traceback of an error (as DIFFCODEC_DEBUG=1)"),
) -> None:
    """Options for every command, given before it: diffcodec --debug decode ..."""
    _run["debug"] = debug


def _debug() -> bool:
    return _run["debug"] or os.environ.get("DIFFCODEC_DEBUG") == "1"


def _fail(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    """The single boundary where every error becomes one line on stderr and an exit code (unless --debug)."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except Exception as e:
            if _debug():
                raise
            if isinstance(e, DiffcodecError):
                raise _fail(str(e), e.exit_code) from None
            if isinstance(e, MemoryError):
                raise _fail("out of memory: the image is too large for this machine", 1) from None
            first_line = (str(e).strip().splitlines() or [""])[0]
            raise _fail(f"internal error ({type(e).__name__}: {first_line}): please report it with the "
                        "traceback that --debug shows", 1) from None

    return wrapper


DEVICE_HELP = "where the network runs: auto, cpu or cuda (decode on the kind you encoded on)"
RECON_HELP = ("how to show a lossy rung: denoise (the network's estimate, refined by the model's post-filter "
              "refine.pt when it has one), ensemble (best PSNR: denoise averaged over four flips of the latent, four "
              "times the network work per rung shown), unrefined (the network's estimate alone), flow "
              "(deterministic), ancestral (sampled, sharpest)")


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[codec.Progress | None]:
    """A progress bar over network calls on stderr (none when disabled or when stderr is not a terminal)."""
    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise BadInputError(f"{path} is a directory, not a diffcodec file")
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror or e}") from None


def _check_writable(path: Path, force: bool) -> None:
    if path.is_dir():
        raise BadInputError(f"{path} is a directory: give a file name to write")
    if path.exists() and not force:
        raise BadInputError(f"{path} exists: pass --force to overwrite it")
    if not path.parent.is_dir():
        raise BadInputError(f"{path.parent}: no such directory")


def _umask() -> int:
    """The process's file creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written output. The file gets
    the permissions a plain open() would give it (0666 less the umask), not mkstemp's 0600."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise BadInputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot create {path}: {e.strerror or e}") from None


def _json_float(x: float | None) -> float | str | None:
    return "inf" if x is not None and math.isinf(x) else x


@app.command()
@_one_line_errors
def encode(
    image: Path = typer.Argument(..., help="image file to compress (PNG, JPEG, ...; RGB, grayscale or palette)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output file (default: IMAGE with suffix .dcz)"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="model name (a folder of weights/) or path to a model file"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=2**63 - 1, help="shared seed (default: random)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with bytes, bits, timings and rungs"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite OUT if it exists"),
    coder: Optional[Coder] = typer.Option(None, "--coder", help="how steps are sent: uq (universal quantization), "
                                          "rec (shared-seed relative entropy coding, slow at late steps), hybrid (rec "
                                          "for the first --rec-steps steps, then uq); recorded in the file (default: "
                                          "the model's choice in its codec.json; the default model's: every step by "
                                          "gaussian rec)"),
    rec_steps: Optional[int] = typer.Option(None, "--rec-steps", min=0, help="with hybrid: steps sent by rec "
                                            "(default: the model's choice, else half of them)"),
    posterior: Optional[Posterior] = typer.Option(None, "--posterior", help="posterior sent by rec: uniform (the "
                                                  "UQDM step) or gaussian (a Gaussian step with the same network; "
                                                  "far fewer bits at the early, noisy steps)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="code the first N of the model's diffusion steps, "
                                        "then the pixels: N + 2 rungs (default: the model's choice, 5 of 8 for the "
                                        "default model, whose pixel context is fitted for 5; 6, 7 and 8 add rungs near "
                                        "43, 50 and 59 dB but a larger lossless rung)"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    overlap: bool = typer.Option(False, "--overlap", help="range-code each step on a second thread while the "
                                 "network runs the next (same file; pays only with a free core or a GPU)"),
    context: bool = typer.Option(True, "--context/--no-context", help="use the model's context networks: send "
                                 "each step that has one in checkerboard groups (step_context.pt: smaller lossy "
                                 "rungs) and code the lossless chunk with the pixel context when it has one for "
                                 "these steps (context.pt: a smaller lossless rung); 4 more passes of a small "
                                 "network each; --no-context sends every step plainly and the pixels factorised"),
) -> None:
    """Compress IMAGE into one progressive file; every prefix of whole chunks decodes."""
    target = out or image.with_suffix(".dcz")
    _check_writable(target, force)
    device = codec.resolve_device(device)
    default = load_model(model, device).coding
    chosen = coder.value if coder is not None else default.coder
    if rec_steps is not None and chosen != Coder.hybrid.value:
        raise typer.BadParameter(f"only applies to the hybrid coder (this run's coder: {chosen})",
                                 param_hint="--rec-steps")
    if posterior == Posterior.gaussian and chosen == Coder.uq.value:
        raise typer.BadParameter("a gaussian posterior needs --coder rec or hybrid", param_hint="--posterior")
    with _progress("encoding", not as_json) as progress:
        result = codec.encode_report(image, model=model, seed=seed, device=device,
                                     progress=progress, coder=coder and coder.value, rec_steps=rec_steps,
                                     posterior=posterior and posterior.value, steps=steps, overlap=overlap,
                                     context=context)
    _write_atomic(target, lambda p: p.write_bytes(result.data))
    if as_json:
        print(json.dumps({
            "bytes": len(result.data),
            "bpp": result.bpp,
            "ideal_bits": result.ideal_bits,
            "nelbo_bits": result.nelbo_bits,
            "seconds": result.seconds,
            "rungs": [{"rung": r.rung, "bytes": r.bytes, "cum_bytes": r.cum_bytes, "bpp": r.bpp,
                       "psnr": _json_float(r.psnr), "ideal_bits": r.ideal_bits, "kl_bits": r.kl_bits}
                      for r in result.rungs],
        }))
        return
    print(f"{target}: {len(result.data)} bytes, {result.bpp:.3f} bpp lossless, {result.seconds['total']:.1f} s")
    print(f"{'rung':>4} {'cum_bytes':>10} {'bpp':>8} {'psnr':>7}")
    for r in result.rungs:
        print(f"{r.rung:>4} {r.cum_bytes:>10} {r.bpp:>8.3f} {r.psnr:>7.2f}")


@app.command()
@_one_line_errors
def decode(
    stream: Path = typer.Argument(..., help="diffcodec file (a truncated file decodes to its best complete rung)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output PNG (default: STREAM with suffix .decoded.png)"),
    rung: Optional[int] = typer.Option(None, "--rung", min=0, help="decode this rung (default: the last complete one)"),
    recon: Recon = typer.Option(Recon.denoise, "--recon", help=RECON_HELP),
    all_rungs: Optional[Path] = typer.Option(None, "--all-rungs", help="also write every rung as DIR/rung_KK.png"),
    model: Optional[str] = typer.Option(None, "--model", help="model to decode with (default: the one named in the file)"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite existing outputs"),
    max_pixels: int = typer.Option(codec.MAX_PIXELS, "--max-pixels", min=1,
                                   help="refuse a file whose header claims more pixels than this"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
) -> None:
    """Decode STREAM to a PNG (in the original image mode at the lossless rung)."""
    data = _read(stream)
    target_device = codec.resolve_device(device)
    parsed = read_stream(data)
    target = out or stream.with_suffix(".decoded.png")
    _check_writable(target, force)
    if all_rungs is not None and all_rungs.exists() and not all_rungs.is_dir():
        raise BadInputError(f"--all-rungs {all_rungs}: not a directory")
    last = len(parsed.chunks) if rung is None else rung
    if last > len(parsed.chunks):
        raise BadInputError(f"--rung {rung}: this file holds rungs 0 to {len(parsed.chunks)}")
    lossless = parsed.header.steps + 1
    header = parsed.header
    if all_rungs is not None and all_rungs.is_dir():
        for k in range(last + 1):
            _check_writable(all_rungs / f"rung_{k:02d}.png", force)
    with _progress("decoding", True) as progress:
        for r in codec.iter_rungs(data, recon.value, last, model, target_device, progress=progress,
                                  only_last=all_rungs is None, max_pixels=max_pixels):
            if all_rungs is not None:
                _make_dir(all_rungs)
                im = to_pil(r.pixels, header.mode, header.palette, r.rung == lossless)
                _write_atomic(all_rungs / f"rung_{r.rung:02d}.png", lambda p, im=im: im.save(p, format="PNG"))
    final = to_pil(r.pixels, header.mode, header.palette, r.rung == lossless)
    _write_atomic(target, lambda p: final.save(p, format="PNG"))
    kind = "lossless" if r.rung == lossless else recon.value
    cut = f"; the file is cut inside chunk {len(parsed.chunks) + 1} ({parsed.trailing_bytes} bytes ignored)" \
        if parsed.trailing_bytes else ""
    print(f"{target}: rung {r.rung} of {lossless} ({kind}), {r.cum_bytes} bytes, {r.bpp:.3f} bpp{cut}")


@app.command()
@_one_line_errors
def info(
    stream: Path = typer.Argument(..., help="diffcodec file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Show the header of STREAM and its rung table (bytes, cumulative bytes, bpp, and the coder of each chunk:
    uq, rec-power, uq-grouped or rec-grouped for a step sent in groups under the step context, "+ filter" where the
    step carries its rung's filter, context-scaled for a lossless chunk coded with the pixel context network)."""
    parsed = read_stream(_read(stream))
    h = parsed.header
    rungs = [{"rung": r.rung, "bytes": r.bytes, "cum_bytes": r.cum_bytes, "bpp": r.bpp}
             for r in codec.rung_table(parsed)]
    coders = [CODERS.get(inner.coder, str(inner.coder)) + (" + filter" if rung_filter is not None else "")
              for inner, rung_filter in (unwrap_filtered(c, f"chunk {i}") for i, c in enumerate(parsed.chunks))]
    doc = {"model": h.model_name, "weights_hash": h.weights_hash.hex(), "height": h.height, "width": h.width,
           "mode": h.mode, "seed": h.seed, "steps": h.steps, "rungs_present": len(parsed.chunks),
           "rungs_total": h.steps + 1, "complete": parsed.complete, "trailing_bytes": parsed.trailing_bytes,
           "coders": coders, "rungs": rungs}
    if as_json:
        print(json.dumps(doc))
        return
    print(f"{stream}: {h.width}x{h.height} {h.mode}, model {h.model_name} ({h.weights_hash.hex()}), "
          f"seed {h.seed}, {h.steps} steps")
    status = "complete (last rung lossless)" if parsed.complete else "truncated: lossy rungs only"
    print(f"{len(parsed.chunks)} of {h.steps + 1} chunks, {status}"
          + (f", {parsed.trailing_bytes} trailing bytes ignored" if parsed.trailing_bytes else ""))
    print(f"{'rung':>4} {'bytes':>9} {'cum_bytes':>10} {'bpp':>8}  coder")
    for r, coder in zip(rungs, ["-", *coders]):
        print(f"{r['rung']:>4} {r['bytes']:>9} {r['cum_bytes']:>10} {r['bpp']:>8.3f}  {coder}")


app.command("train")(_one_line_errors(train_command))
app.command("train-context")(_one_line_errors(train_context_command))
app.command("train-step-context")(_one_line_errors(train_step_context_command))
app.command("train-refine")(_one_line_errors(train_refine_command))


def main() -> None:
    """Console entry point."""
    app()
