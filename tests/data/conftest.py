"""Fixtures for the data tests: a tiny MNIST in IDX form, with matching checksums."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from vi_jax.data import mnist

TINY_SIZES = {"train": 6, "test": 4}


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialises `array` as IDX (big-endian), the format of the MNIST files."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


class TinyMnist(NamedTuple):
    root: Path  # cache root
    raw: Path  # <root>/mnist/raw
    files: dict[str, bytes]  # file name -> .gz bytes (as published)
    arrays: dict[str, np.ndarray]  # "train_images" [N, 28, 28] uint8, "train_labels" [N] ...

    def put_raw(self) -> None:
        """Writes the IDX files where `load_mnist` looks for local copies."""
        self.raw.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (self.raw / name).write_bytes(data)


@pytest.fixture(name="idx_bytes")
def idx_bytes_fixture():
    """The IDX serialiser, for tests that write their own files."""
    return idx_bytes


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyMnist:
    """A 6 + 4 image MNIST whose IDX .gz files and checksums replace the real ones.

    The files are not placed anywhere; tests put them in `raw` or behind a mirror.
    Network access is switched off by default (`VI_JAX_OFFLINE=1`).
    """
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    arrays: dict[str, np.ndarray] = {}
    table = {}
    for (split, part), remote in mnist._IDX_FILES.items():
        n = TINY_SIZES[split]
        if part == "images":
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        data = gzip.compress(idx_bytes(array), mtime=0)
        files[remote.filename] = data
        arrays[f"{split}_{part}"] = array
        table[(split, part)] = mnist._Remote(
            remote.filename, len(data), hashlib.sha256(data).hexdigest()
        )
    monkeypatch.setattr(mnist, "_IDX_FILES", table)
    monkeypatch.setattr(mnist, "_SPLIT_SIZES", dict(TINY_SIZES))
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", ())
    monkeypatch.setenv("VI_JAX_OFFLINE", "1")
    root = tmp_path / "cache"
    raw = root / "mnist" / "raw"
    return TinyMnist(root=root, raw=raw, files=files, arrays=arrays)
