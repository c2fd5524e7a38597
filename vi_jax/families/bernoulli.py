"""The factorised Bernoulli family q(z) = prod_d Bernoulli(z_d; sigmoid(logits_d))."""

from __future__ import annotations

import distrax
import jax.numpy as jnp

from vi_jax._validation import check_not_nan, check_rank_at_least
from vi_jax.types import Array


def factorised_bernoulli(logits: Array) -> distrax.Independent:
    """q(z) = prod_d Bernoulli(z_d; sigmoid(logits_d)), samples as floats in {0, 1}.

    The discrete estimators (`vi_jax.estimators.discrete`: ARM, DisARM, the relaxations)
    read the logits back as `q.distribution.logits`; this is the form they accept.
    `log_prob` is `sum_d z_d log sigmoid(l_d) + (1 - z_d) log sigmoid(-l_d)`, which is
    also defined for relaxed z in [0, 1] (the Concrete relaxation evaluates it there).

    Args:
      logits: `[*batch, D]` real logits (+-inf allowed: a deterministic bit; NaN refused).

    Returns:
      `distrax.Independent(distrax.Bernoulli)` with batch `[*batch]`, event `[D]` and
      floating samples (the dtype of `logits`).
    """
    check_rank_at_least(logits, 1, "logits")
    check_not_nan(logits, "logits")
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(jnp.zeros(()).dtype)
    return distrax.Independent(
        distrax.Bernoulli(logits=logits, dtype=logits.dtype), reinterpreted_batch_ndims=1
    )


__all__ = ["factorised_bernoulli"]
