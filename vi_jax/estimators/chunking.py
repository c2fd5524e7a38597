"""Evaluating a log joint over its K samples a chunk at a time.

An estimator hands `log_joint` all K samples at once, `z [K, *batch, *event]`, so the
decoder's activations are `[K * B, data]`. On a CPU, once those buffers outgrow the cache,
every elementwise pass over them (the likelihood, its derivative, the activation's
derivative) streams from memory. `chunk_log_joint` evaluates the same function in a
`lax.map` over chunks of the K axis: the same samples, the same values (up to
floating-point reassociation) and the same gradients, with chunk-sized buffers. On the
2-core CPU of `benchmarks/README.md` (issue 19, session 7) it made the ELBO and IWAE
value-and-gradient at K = 50, batch 128 (784-400-20 VAE) 16-24% faster; below a few
million elements per buffer it is slower (the loop costs more than the cache saves), so
`default_log_joint_chunk` chunks only above that size and only on a CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.types import LogJoint

# Elements (K * B * data) of one buffer above which `default_log_joint_chunk` chunks on a
# CPU, and the elements of one chunk it aims at (640 rows of MNIST at 2**19). A quarter of
# evaluation's aim (`vi_jax.inference.evaluate.EVAL_CHUNK_ELEMENTS`, 2**21): a
# differentiated chunk keeps its activations and their cotangents for the backward pass,
# a forward-only one does not.
LOSS_CHUNK_ABOVE = {"cpu": 2**22}
LOSS_CHUNK_ELEMENTS = {"cpu": 2**19}


def largest_divisor(n: int, at_most: int, at_least: int = 1) -> int | None:
    """The largest divisor of `n` in `[at_least, at_most]`, or None if there is none.

    The sample-chunk policies (`default_log_joint_chunk`, and evaluation's
    `vi_jax.inference.default_sample_chunk`) use it so that a chunked loop needs no
    remainder step.

    Args:
      n: the number to divide (e.g. K), >= 1.
      at_most: the largest divisor wanted, >= 1.
      at_least: the smallest divisor accepted, >= 1.

    Returns:
      An int `c` with `n % c == 0` and `at_least <= c <= at_most`, or None.

    Raises:
      TypeError / ValueError: if an argument is not a positive int (naming it).
    """
    n = check_positive_int(n, "n")
    at_most = check_positive_int(at_most, "at_most")
    at_least = check_positive_int(at_least, "at_least")
    return next((c for c in range(min(at_most, n), at_least - 1, -1) if n % c == 0), None)


def default_log_joint_chunk(
    num_samples: int, batch_size: int, data_size: int, backend: str | None = None
) -> int | None:
    """The K-chunk `make_vae_loss` evaluates its log joint in by default, or None (no chunk).

    On a CPU, when `num_samples * batch_size * data_size` exceeds `LOSS_CHUNK_ABOVE` (2**22
    elements), the largest divisor `c` of K with `c * batch_size * data_size <=
    LOSS_CHUNK_ELEMENTS` (2**19), at least 1; otherwise, and on every other backend (an
    accelerator wants the large products; unmeasured there), None.

    Args:
      num_samples: K.
      batch_size: B, the examples of the batch.
      data_size: the elements of one example (784 for MNIST).
      backend: a JAX platform name; None: `jax.default_backend()`.

    Returns:
      A chunk size in `[1, K)` dividing K, or None.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    data_size = check_positive_int(data_size, "data_size")
    backend = backend or jax.default_backend()
    if backend not in LOSS_CHUNK_ABOVE:
        return None
    per_sample = batch_size * data_size
    if num_samples * per_sample <= LOSS_CHUNK_ABOVE[backend]:
        return None
    fits = max(1, LOSS_CHUNK_ELEMENTS[backend] // per_sample)
    chunk = largest_divisor(num_samples, fits) or 1  # (1 divides K: never None)
    return chunk if chunk < num_samples else None


def chunk_log_joint(log_joint: LogJoint, chunk_size: int) -> LogJoint:
    """`log_joint` evaluated over the leading (sample) axis `chunk_size` samples at a time.

    Args:
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]` for any K (`z` may be
        a pytree of arrays with a common leading axis).
      chunk_size: samples per evaluation (static), >= 1. With K <= `chunk_size` the
        function is called once, as is; otherwise in a `lax.map` over `K // chunk_size`
        chunks, then once on the remaining `K % chunk_size` samples, if any.

    Returns:
      A `LogJoint` with the same values and derivatives (forward and reverse mode).

    Raises:
      TypeError / ValueError: if `log_joint` is not callable or `chunk_size` is not a
        positive int.
    """
    check_callable(log_joint, "log_joint")
    chunk_size = check_positive_int(chunk_size, "chunk_size")

    def chunked(z):
        k = jax.tree.leaves(z)[0].shape[0]
        if k <= chunk_size:
            return log_joint(z)
        num_full, rest = divmod(k, chunk_size)
        head = jax.tree.map(
            lambda a: a[: num_full * chunk_size].reshape(num_full, chunk_size, *a.shape[1:]), z
        )
        out = jax.lax.map(log_joint, head)
        out = out.reshape(num_full * chunk_size, *out.shape[2:])
        if rest:
            tail = log_joint(jax.tree.map(lambda a: a[num_full * chunk_size :], z))
            out = jnp.concatenate([out, tail])
        return out

    return chunked
