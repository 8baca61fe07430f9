"""The figures: R-D curves (PSNR and MS-SSIM against bpp, log x) and a contact sheet of rungs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .report import OURS  # noqa: E402

MIN_BPP = 0.01  # rung 0 (header only, ~0.001 bpp) is left off the log axis
STYLE = {  # codec -> matplotlib line style
    "diffcodec denoise": dict(color="black", marker="o", lw=2.2),
    "diffcodec unrefined": dict(color="black", marker="o", lw=1.2, ls=":"),
    "diffcodec flow": dict(color="dimgray", marker="s", lw=1.6),
    "diffcodec ancestral": dict(color="darkgray", marker="^", lw=1.6),
    "diffcodec ensemble": dict(color="black", marker="D", lw=1.6, ls="--"),
    "JPEG": dict(color="tab:brown", marker="."),
    "WebP": dict(color="tab:green", marker="."),
    "AVIF": dict(color="tab:red", marker="."),
    "JPEG XL": dict(color="tab:purple", marker="."),
    "JPEG 2000": dict(color="tab:blue", marker="."),
    "JPEG 2000 layers": dict(color="tab:blue", marker="x", ls="--"),
}


def rd_plot(curves: dict[str, list[dict]], key: str, ylabel: str, title: str, note: str, path: Path) -> None:
    """One R-D figure: every codec's mean curve of `key` against bpp on a log axis."""
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    for codec in list(OURS) + [c for c in STYLE if c not in OURS]:
        rows = [r for r in curves.get(codec, []) if r["bpp"] >= MIN_BPP]
        if rows:
            ax.plot([r["bpp"] for r in rows], [r[key] for r in rows], label=codec, ms=5, **STYLE[codec])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("bits per pixel (real file bytes, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(loc="lower right", fontsize=9)
    fig.text(0.01, 0.005, note, fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def crop_box(height: int, width: int, size: int) -> tuple[slice, slice]:
    """A centred size x size window (or the whole image where it is smaller)."""
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return slice(top, top + size), slice(left, left + size)


def contact_sheet(rows: dict[str, list[tuple[str, np.ndarray]]], title: str, path: Path) -> None:
    """A grid of image crops: one row per reconstruction, one column per rung, each with its caption."""
    n_rows, n_cols = len(rows), max(len(v) for v in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.25 * n_rows + 0.4), dpi=110, squeeze=False)
    for ax_row, (recon, tiles) in zip(axes, rows.items()):
        for j, ax in enumerate(ax_row):
            ax.axis("off")
            if j < len(tiles):
                caption, pixels = tiles[j]
                ax.imshow(pixels, interpolation="nearest")
                ax.set_title(caption, fontsize=8)
        ax_row[0].text(-0.08, 0.5, recon, transform=ax_row[0].transAxes, rotation=90, va="center", ha="right",
                       fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
