"""Cache location, offline switch, checksums and atomic writes shared by the data loaders.

Nothing here touches the network. Every file the data layer writes goes through
`atomic_write`: it is written to a temporary file in the destination's folder and
renamed into place only when complete, so an interrupted run never leaves a partial
file where a later run would trust it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from vi_jax._io import atomic_write

#: Environment variable naming the cache root (overrides the XDG default).
CACHE_ENV = "VI_JAX_DATA"
#: Environment variable that, when truthy, forbids network access by the loaders.
OFFLINE_ENV = "VI_JAX_OFFLINE"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def default_cache_dir() -> Path:
    """The cache root: `$VI_JAX_DATA`, else `$XDG_CACHE_HOME/vi_jax`, else `~/.cache/vi_jax`.

    The folder is not created here; loaders create what they write into.
    """
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vi_jax"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """`cache_dir` as a Path, or `default_cache_dir()` when it is None."""
    if cache_dir is None:
        return default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(
            f"`cache_dir` must be a path (str or os.PathLike) or None, got "
            f"{type(cache_dir).__name__}."
        )
    return Path(cache_dir).expanduser()


def resolve_offline(offline: bool | None) -> bool:
    """`offline` if given, else the value of `$VI_JAX_OFFLINE` (default: online)."""
    if offline is not None:
        if not isinstance(offline, bool):
            raise TypeError(f"`offline` must be a bool or None, got {type(offline).__name__}.")
        return offline
    raw = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(
        f"`${OFFLINE_ENV}` must be one of {sorted(_TRUE | (_FALSE - {''}))} or empty, got {raw!r}."
    )


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CorruptCacheError(ValueError):
    """A cache file is unreadable or differs from the digest written beside it."""


def digest_path(path: Path) -> Path:
    """The digest file written beside a cache file: `<path>.sha256`."""
    return path.with_name(path.name + ".sha256")


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` to a compressed `.npz` at `path`, and its SHA-256 beside it.

    Both are written atomically; the digest last, so that a run killed in between
    leaves a digest that does not match (the cache is then rebuilt, never trusted).
    """
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    with atomic_write(digest_path(path)) as f:
        f.write(f"{sha256_file(path)}  {path.name}\n".encode())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Reads every array of a cached `.npz`, verified against its digest file.

    Raises:
      CorruptCacheError: the file is not a readable `.npz` of plain arrays, or its
        SHA-256 differs from `<path>.sha256`. (A cache written before digests existed
        has no digest file; it is read with its structure checks only.)
    """
    digest_file = digest_path(path)
    if digest_file.exists():
        try:
            expected = digest_file.read_text().split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            raise CorruptCacheError(f"unreadable digest file {digest_file}") from None
        got = sha256_file(path)
        if got != expected:
            raise CorruptCacheError(
                f"SHA-256 {got} differs from {expected} recorded in {digest_file.name}"
            )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise CorruptCacheError(f"not a readable .npz of plain arrays ({err})") from None


def remove_cache_file(path: Path) -> None:
    """Deletes a cache file and its digest (used for a corrupt cache, which is rebuilt)."""
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)
