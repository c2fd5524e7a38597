"""KL(q || p) helpers, in one place.

The closed-form lookup, its type-level test, the per-dimension diagonal-Gaussian
formula and the check of a `kl` / `method` option.

`bounds.kl_divergence` (closed form, else Monte Carlo), `models.priors.analytic_kl` /
`kl_is_analytic` and `diagnostics.latent.kl_per_dimension` are built on these.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from vi_jax.types import Array

KL_METHODS = ("auto", "analytic", "mc")


def check_kl_method(method: str, name: str) -> str:
    """Returns `method`, or raises ValueError naming the option `name`."""
    if not isinstance(method, str) or method not in KL_METHODS:
        raise ValueError(f"`{name}` must be 'auto', 'analytic' or 'mc', got {method!r}.")
    return method


def analytic_kl(q: distrax.Distribution, p: distrax.Distribution) -> Array | None:
    """Closed-form KL(q || p) where distrax has one, else None.

    Unlike `vi_jax.estimators.kl_divergence` (which falls back to Monte Carlo itself),
    this never samples: None tells the caller that only a Monte Carlo estimate exists
    (`vi_jax.estimators.kl_divergence(key, q, p, K)` gives one).

    Args:
      q: distribution with batch `[*batch]`, event `[*event]` (e.g. the encoder output).
      p: distribution with the same event and a batch broadcastable to q's (a prior).

    Returns:
      `[*batch]` exact KL, or None when no closed form is registered (e.g. a Gaussian
      q against a Laplace or mixture prior).
    """
    try:
        return q.kl_divergence(p)
    except NotImplementedError:
        return None


def kl_is_analytic(q: distrax.Distribution, p: distrax.Distribution) -> bool:
    """Whether `analytic_kl(q, p)` has a closed form (decided from types, no compute)."""
    try:
        jax.eval_shape(lambda: q.kl_divergence(p))
    except NotImplementedError:
        return False
    return True


def diag_gaussian_kl(mu_q: Array, s_q: Array, mu_p: Array, s_p: Array) -> Array:
    """Elementwise KL(N(mu_q, s_q^2) || N(mu_p, s_p^2)) (one value per coordinate)."""
    ratio = s_q / s_p
    return 0.5 * (ratio**2 + ((mu_q - mu_p) / s_p) ** 2 - 1.0) - jnp.log(ratio)
