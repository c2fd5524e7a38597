"""Pictures of a trained model: image grids, reconstructions, interpolations, curves.

Pure host-side helpers over NumPy arrays. They draw on `matplotlib.figure.Figure`
objects, which render to a file without any pyplot backend: importing this module sets
no global backend (a notebook's inline figures keep working) and saving works on machines
without a display.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def _as_images(images: np.ndarray, image_shape: tuple[int, int] | None) -> np.ndarray:
    """[N, H*W] or [N, H, W(, 1)] -> [N, H, W]."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        if image_shape is None:
            side = int(round(np.sqrt(images.shape[1])))
            if side * side != images.shape[1]:
                raise ValueError(
                    f"`images` has {images.shape[1]} features, not a square image; "
                    "pass `image_shape`."
                )
            image_shape = (side, side)
        images = images.reshape(-1, *image_shape)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"`images` must be [N, H*W] or [N, H, W(, 1)], got {images.shape}.")
    return images


def tile_images(
    images: np.ndarray, num_cols: int, image_shape: tuple[int, int] | None = None, pad: int = 1
) -> np.ndarray:
    """Arranges `[N, H*W]` (or `[N, H, W]`) images into one `[rows*(H+pad), cols*(W+pad)]` array."""
    imgs = _as_images(images, image_shape)
    n, h, w = imgs.shape
    if num_cols < 1:
        raise ValueError(f"`num_cols` must be >= 1, got {num_cols}.")
    rows = -(-n // num_cols)
    canvas = np.ones((rows * (h + pad) + pad, num_cols * (w + pad) + pad), np.float32)
    for i in range(n):
        r, c = divmod(i, num_cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = imgs[
            i
        ]
    return canvas


def save_image_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    num_cols: int,
    title: str = "",
    image_shape: tuple[int, int] | None = None,
) -> None:
    """Saves images `[N, H*W]` in [0, 1] as one PNG grid."""
    canvas = tile_images(images, num_cols, image_shape)
    scale = 0.5 if canvas.shape[1] > 200 else 1.0
    fig = Figure(figsize=(canvas.shape[1] / 40 * scale + 0.5, canvas.shape[0] / 40 * scale + 0.8))
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        # small grids (8x8 digits) get a narrow figure: wrap the title to fit it
        width_chars = max(20, int(fig.get_figwidth() * 12))
        ax.set_title(textwrap.fill(title, width_chars), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save_reconstructions(
    path: str | os.PathLike,
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    title: str = "Inputs (odd rows) and their reconstructions (even rows)",
    num_cols: int = 10,
) -> None:
    """Saves inputs `[N, D]` and reconstructions `[N, D]` as alternating rows of one grid."""
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    if inputs.shape != reconstructions.shape:
        raise ValueError(
            f"`inputs` {inputs.shape} and `reconstructions` {reconstructions.shape} differ."
        )
    rows = []
    for start in range(0, len(inputs), num_cols):
        rows += [inputs[start : start + num_cols], reconstructions[start : start + num_cols]]
    save_image_grid(path, np.concatenate(rows), num_cols, title)


def save_curves(
    path: str | os.PathLike,
    curves: dict[str, Sequence[float]],
    xlabel: str = "epoch",
    ylabel: str = "nats per example",
    title: str = "",
    x: Sequence[float] | None = None,
) -> None:
    """Saves line plots of named curves (e.g. train bound, test bound) against epochs."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, ys in curves.items():
        xs = x if x is not None else np.arange(1, len(ys) + 1)
        ax.plot(xs, ys, marker="o" if len(ys) < 30 else None, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
