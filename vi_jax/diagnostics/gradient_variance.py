"""Gradient statistics of a stochastic estimator: mean, variance, SNR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.types import Array


def gradient_statistics(
    key: Array, surrogate_fn: Callable[[Array, Any], Array], params: Any, num_keys: int
) -> dict[str, Any]:
    """Statistics of `grad surrogate_fn(key, params)` over `num_keys` independent keys.

    All draws are one compiled `vmap` over keys, so comparing estimators on a model is
    one call per estimator, e.g. `surrogate_fn = lambda k, p: jnp.mean(
    estimator(k, log_joint_of(p), q_of(p), K))`.

    Args:
      key: PRNG key.
      surrogate_fn: `(key, params) -> scalar` surrogate whose gradient is the estimate.
      params: pytree at which to evaluate the gradient.
      num_keys: number of gradient draws >= 2 (static).

    Returns:
      Dict with "mean" and "variance" (pytrees like `params`, per component, ddof=1),
      "snr" (pytree, `|E g| / std g` per component, Rainforth et al. 2018),
      "trace_variance" (scalar, sum of per-component variances), "mean_norm" (scalar,
      ||E g||) and "mean_stderr" (pytree, std g / sqrt(num_keys)).
    """
    check_callable(surrogate_fn, "surrogate_fn")
    num_keys = check_positive_int(num_keys, "num_keys")
    if num_keys < 2:
        raise ValueError(f"`num_keys` must be >= 2 to estimate a variance, got {num_keys}.")
    grads = jax.vmap(jax.grad(surrogate_fn, argnums=1), in_axes=(0, None))(
        jax.random.split(key, num_keys), params
    )
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    var = jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), grads)
    std = jax.tree.map(jnp.sqrt, var)
    snr = jax.tree.map(lambda m, s: jnp.abs(m) / s, mean, std)
    leaves_var = jax.tree.leaves(var)
    leaves_mean = jax.tree.leaves(mean)
    return {
        "mean": mean,
        "variance": var,
        "snr": snr,
        "mean_stderr": jax.tree.map(lambda s: s / jnp.sqrt(num_keys), std),
        "trace_variance": sum(jnp.sum(v) for v in leaves_var),
        "mean_norm": jnp.sqrt(sum(jnp.sum(m**2) for m in leaves_mean)),
    }
