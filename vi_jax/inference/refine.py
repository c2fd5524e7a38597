"""Semi-amortised inference: refine an encoder's q by per-datapoint gradient steps.

Kim et al. (2018, SA-VAE) and Krishnan et al. (2018) start from the amortised
q(z | x) = N(loc(x), diag scale(x)^2) and take a few gradient steps on the free
per-datapoint phi = (loc, log scale) to close part of the amortisation gap. Here this
is used at evaluation time (no gradient flows back into the encoder).
"""

from __future__ import annotations

from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import optax

from vi_jax._validation import check_callable, check_positive_float, check_positive_int
from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.families import Family
from vi_jax.inference import svi
from vi_jax.types import Array, ModelView

OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}


def _diag_params(q: distrax.Distribution) -> tuple[Array, Array]:
    if not isinstance(q, distrax.MultivariateNormalDiag):
        raise TypeError(f"`q` must be a distrax.MultivariateNormalDiag, got {type(q).__name__}.")
    loc = q.loc
    if loc.ndim != 2:
        raise ValueError(f"`q` must have batch [B] and event [D] (loc [B, D]), got {loc.shape}.")
    return loc, jnp.broadcast_to(q.scale_diag, loc.shape)


def refine(
    key: Array,
    log_joint: Callable[[Array], Array],
    q: distrax.Distribution,
    *,
    num_steps: int,
    estimator: Callable[..., Array] = elbo_pathwise,
    num_samples: int = 1,
    optimizer: str = "adam",
    learning_rate: float = 1e-2,
    family: Family | None = None,
) -> tuple[distrax.Distribution, Array]:
    """Refines an amortised diagonal-Gaussian q by `num_steps` per-datapoint steps.

    Args:
      key: PRNG key.
      log_joint: `z [K, B, D] -> log p(x, z) [K, B]`.
      q: the encoder's `distrax.MultivariateNormalDiag`, loc/scale `[B, D]`.
      num_steps: gradient steps >= 1 (static).
      estimator: `estimator(key, log_joint, q, num_samples) -> [B]`.
      num_samples: K >= 1 per step (static).
      optimizer: "sgd" or "adam".
      learning_rate: step size > 0.
      family: None (q is a `MultivariateNormalDiag`, refined as one) or the
        `vi_jax.families.Family` that made q (e.g. `vae.encoder.family`): q's params and,
        for a flow, its weights are then refined per data point.

    Returns:
      `(q_refined, trace)`: the refined `MultivariateNormalDiag` (batch `[B]`) with its
      parameters detached from the encoder, and `trace [num_steps + 1, B]`, the
      estimator's bound before each step and after the last one.
    """
    check_callable(log_joint, "log_joint")
    num_steps = check_positive_int(num_steps, "num_steps")
    num_samples = check_positive_int(num_samples, "num_samples")
    learning_rate = check_positive_float(learning_rate, "learning_rate")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}.")
    if family is None:
        loc, scale = _diag_params(q)
        init = svi.init_params(
            jax.lax.stop_gradient(loc), "meanfield", jax.lax.stop_gradient(scale)
        )
        fam: str | Family = "meanfield"
    elif isinstance(family, Family):
        init, fam = svi.init_from_q(q, family), family
    else:
        raise TypeError(f"`family` must be None or a vi_jax.families.Family, got {family!r}.")
    k_fit, k_last = jax.random.split(key)
    params, q_new, trace = svi.fit_local(
        k_fit,
        log_joint,
        init,
        family=fam,
        optimizer=OPTIMIZERS[optimizer](learning_rate),
        estimator=estimator,
        num_samples=num_samples,
        num_steps=num_steps,
    )
    last = jax.lax.stop_gradient(estimator(k_last, log_joint, q_new, num_samples))
    return q_new, jnp.concatenate([trace, last[None]], axis=0)


def refine_view(
    key: Array,
    view: ModelView,
    *,
    num_steps: int,
    estimator: Callable[..., Array] = elbo_pathwise,
    num_samples: int = 1,
    optimizer: str = "adam",
    learning_rate: float = 1e-2,
    family: Family | None = None,
) -> tuple[ModelView, Array]:
    """`refine` applied to a `ModelView`: returns the view with its posterior refined.

    Args:
      key: PRNG key.
      view: a `ModelView` whose `posterior` is a `MultivariateNormalDiag`, batch `[B]`.
      num_steps: gradient steps >= 1 (static), as in `refine`.
      estimator: surrogate estimator, as in `refine`.
      num_samples: K >= 1 per step, as in `refine`.
      optimizer: "sgd" or "adam", as in `refine`.
      learning_rate: step size > 0, as in `refine`.
      family: the family that made the posterior (None: diagonal Gaussian), as in `refine`.

    Returns:
      `(view', trace [num_steps + 1, B])`; `view'` can be passed on to evaluation.
    """
    q, trace = refine(
        key,
        view.log_joint,
        view.posterior,
        num_steps=num_steps,
        estimator=estimator,
        num_samples=num_samples,
        optimizer=optimizer,
        learning_rate=learning_rate,
        family=family,
    )
    return view._replace(posterior=q), trace
