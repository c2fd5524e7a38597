"""vi_jax.plotting: saves PNGs without pyplot, and importing vi_jax sets no backend."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vi_jax import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_import_sets_no_matplotlib_backend():
    # A global backend chosen at import would hide every inline figure in Jupyter.
    code = (
        "import sys, matplotlib, vi_jax, vi_jax.plotting, vi_jax.experiment;"
        "print('matplotlib.pyplot' in sys.modules, matplotlib.rcParams._get_backend_or_none())"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["False", "None"], out


def test_save_functions_write_png_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(12, 64))
    plotting.save_image_grid(tmp_path / "grid.png", images, 4, title="a grid")
    plotting.save_reconstructions(tmp_path / "rec.png", images[:6], images[6:], num_cols=3)
    plotting.save_curves(tmp_path / "curve.png", {"train": [3.0, 2.0, 1.5], "test": [3, 2.5, 2]})
    for name in ("grid.png", "rec.png", "curve.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_tile_images_layout_and_errors():
    canvas = plotting.tile_images(np.zeros((5, 4)), 2, pad=1)  # 2x2 images, 3 rows of 2
    assert canvas.shape == (3 * 3 + 1, 2 * 3 + 1)
    with pytest.raises(ValueError, match="`num_cols`"):
        plotting.tile_images(np.zeros((5, 4)), 0)
    with pytest.raises(ValueError, match="`images`"):
        plotting.tile_images(np.zeros((5, 5)), 2)
    with pytest.raises(ValueError, match="`inputs`"):
        plotting.save_reconstructions("unused.png", np.zeros((2, 4)), np.zeros((3, 4)))
