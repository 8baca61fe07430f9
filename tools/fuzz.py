"""The long fuzz run: random mutations of real diffcodec files, decoded with a per-case time limit.

    python tools/fuzz.py --cases 20000 [--seed 0] [--timeout 10] [--out bench/results/fuzz.json]

Files: three real crops (tests/data) coded with a tiny random model (the fixture of the tests: the
decoder's code paths are the same for any model, and a case takes milliseconds). Mutations and the
oracle are those of tests/fuzzing.py: raw (CRCs left as they are) and crafted (every CRC recomputed)
truncations, bit flips, byte sets, inserts, deletes and appends. The decoder runs with a pixel cap of
16 x the original image's pixels, so a crafted header cannot ask for an hour of decoding. Prints the
count of every (mutation, outcome) pair; a crash (an exception other than DiffcodecError), a wrong
image or a hang (a case over --timeout seconds) is printed in full and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test fixtures' tiny model and the shared fuzz helpers

import diffcodec  # noqa: E402
from conftest import KODIM01, KODIM08, KODIM20, _tiny_model, rgb_pixels  # noqa: E402
from fuzzing import KINDS, Mutation, WrongImage, outcome  # noqa: E402

CROPS = {"kodim01 16x12": (KODIM01, np.s_[10:22, 20:36]), "kodim20 53x37": (KODIM20, np.s_[:, :]),
         "kodim08 40x17": (KODIM08, np.s_[:, 100:140])}


class Hang(Exception):
    """A case ran past the time limit."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def random_mutation(rnd: random.Random, size: int) -> Mutation:
    """Any kind, crafted half the time; a third of the positions within the first 80 bytes (header and
    first chunk framing), which a uniform position would rarely hit."""
    n = rnd.choice([1, 1, 1, 2, 4, 16, 64])
    at = rnd.randrange(min(80, size + 1)) if rnd.random() < 1 / 3 else rnd.randrange(size + 1)
    return Mutation(rnd.choice(KINDS), at, rnd.randbytes(n), rnd.random() < 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=10, help="seconds per case before it counts as a hang")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = _tiny_model(Path(tempfile.mkdtemp()) / "tiny-test" / "model.pt", seed=0)
    files = []
    for name, (path, crop) in CROPS.items():
        pixels = np.ascontiguousarray(rgb_pixels(path)[crop])
        data = diffcodec.encode(pixels, model=model, seed=1)
        reference = [r.pixels for r in diffcodec.decode_rungs(data, model=model)]
        files.append((name, data, reference, 16 * pixels.shape[0] * pixels.shape[1]))
        print(f"{name}: {len(data)} bytes, {len(reference)} rungs", flush=True)
    rnd = random.Random(args.seed)
    counts: Counter[str] = Counter()
    failures = []
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    for case in range(args.cases):
        name, data, reference, max_pixels = files[case % len(files)]
        mutation = random_mutation(rnd, len(data))
        mutated = mutation.apply(data)
        signal.alarm(args.timeout)
        try:
            result = outcome(mutated, model, reference, max_pixels)
        except Hang:
            result = "HANG"
        except WrongImage as e:
            result = f"WRONG IMAGE ({e})"
        except Exception:
            result = "CRASH"
            failures.append({"case": case, "file": name, "mutation": repr(mutation), "traceback": traceback.format_exc()})
        finally:
            signal.alarm(0)
        if result in ("HANG", "CRASH") or result.startswith("WRONG"):
            print(f"case {case} ({name}, {mutation!r}): {result}", flush=True)
        counts[f"{mutation.label} -> {result}"] += 1
    seconds = time.perf_counter() - start
    by_kind = Counter(key.split(" -> ")[0] for key in counts.elements())
    for key, n in sorted(counts.items()):
        print(f"{n:7d}  {key}")
    bad = sum(n for key, n in counts.items() if key.endswith(("HANG", "CRASH")) or "WRONG IMAGE" in key)
    print(f"{args.cases} cases in {seconds:.0f} s; by mutation: {dict(sorted(by_kind.items()))}; "
          f"crashes, hangs and wrong images: {bad}")
    for failure in failures[:5]:
        print(failure["traceback"])
    if args.out:
        args.out.write_text(json.dumps({"cases": args.cases, "seed": args.seed, "seconds": seconds,
                                        "counts": dict(sorted(counts.items())), "failures": failures}, indent=1))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
