"""Health of importance weights w = p(x, z) / q(z), z ~ q: ESS and Pareto k-hat."""

from __future__ import annotations

from collections.abc import Callable

import distrax

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.estimators.bounds import log_weights
from vi_jax.estimators.weights import effective_sample_size, pareto_khat
from vi_jax.types import Array


def weight_diagnostics(
    key: Array, log_joint: Callable[[Array], Array], q: distrax.Distribution, num_samples: int
) -> dict[str, Array]:
    """ESS and Pareto k-hat of q as an importance proposal for p(z | x).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal, batch `[*batch]`.
      num_samples: K >= 2 (static); k-hat needs K of a few hundred to be reliable.

    Returns:
      Dict of `[*batch]` arrays: "ess" (Kish, in [1, K]), "ess_fraction" (ess / K) and
      "pareto_k" (k-hat > 0.7: IS estimates with q are unreliable).
    """
    check_callable(log_joint, "log_joint")
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"`num_samples` must be >= 2 for weight diagnostics, got {num_samples}.")
    _, log_w = log_weights(key, log_joint, q, num_samples)
    ess = effective_sample_size(log_w)
    return {"ess": ess, "ess_fraction": ess / num_samples, "pareto_k": pareto_khat(log_w)}
