"""Data: MNIST (fetched, verified, cached), preprocessing, and small data sets.

This layer imports numpy and JAX only. Images are flat `[N, D]` rows throughout;
`unflatten_images` gives `[N, H, W, 1]` for convolutional models.
"""

from vi_jax.data._cache import default_cache_dir
from vi_jax.data.binarize import (
    dequantize,
    dynamic_binarize,
    static_binarize,
    static_binarized_mnist,
    to_unit_interval,
)
from vi_jax.data.mnist import (
    MNIST_MIRRORS,
    ChecksumError,
    Dataset,
    DataUnavailableError,
    load_mnist,
    mnist_cache_path,
    read_idx,
    unflatten_images,
)
from vi_jax.data.small import load_digits, synthetic_binary_images

__all__ = [
    "MNIST_MIRRORS",
    "ChecksumError",
    "DataUnavailableError",
    "Dataset",
    "default_cache_dir",
    "dequantize",
    "dynamic_binarize",
    "load_digits",
    "load_mnist",
    "mnist_cache_path",
    "read_idx",
    "static_binarize",
    "static_binarized_mnist",
    "synthetic_binary_images",
    "to_unit_interval",
    "unflatten_images",
]
