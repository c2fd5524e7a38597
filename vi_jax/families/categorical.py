"""Groups of one-hot categoricals, flattened to the latent vector a decoder takes.

z is `G` groups of `C`-way one-hot vectors, stored flat as `[*batch, G * C]` so that it
fits the `[*batch, latent]` convention of every model and estimator.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_not_nan, check_rank_at_least
from vi_jax.types import Array


class GroupedOneHot(distrax.Distribution):
    """q(z) = prod_g OneHotCategorical(z_g; softmax(logits_g)), z flattened to `[G * C]`.

    Attributes:
      logits: `[*batch, G, C]` unnormalised log-probabilities.
      num_groups: G.
      num_classes: C.
    """

    is_discrete = True  # `vi_jax.estimators.is_reparameterized` reads this

    def __init__(self, logits: Array) -> None:
        """Builds the distribution.

        Args:
          logits: `[*batch, G, C]`, C >= 2; NaN refused.
        """
        super().__init__()
        check_rank_at_least(logits, 2, "logits")
        check_not_nan(logits, "logits")
        logits = jnp.asarray(logits)
        if not jnp.issubdtype(logits.dtype, jnp.floating):
            logits = logits.astype(jnp.zeros(()).dtype)
        if logits.shape[-1] < 2:
            raise ValueError(f"`logits` must have C >= 2 classes, got shape {logits.shape}.")
        self._logits = logits

    @property
    def logits(self) -> Array:
        """`[*batch, G, C]` logits."""
        return self._logits

    @property
    def num_groups(self) -> int:
        """G, the number of groups."""
        return int(self._logits.shape[-2])

    @property
    def num_classes(self) -> int:
        """C, the classes per group."""
        return int(self._logits.shape[-1])

    @property
    def event_shape(self) -> tuple[int, ...]:
        """`(G * C,)`."""
        return (self.num_groups * self.num_classes,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch shape: the logits' shape without its last two axes."""
        return tuple(self._logits.shape[:-2])

    @property
    def dtype(self):
        """The floating dtype of samples."""
        return self._logits.dtype

    def log_probs(self) -> Array:
        """`[*batch, G, C]` normalised log-probabilities."""
        return jax.nn.log_softmax(self._logits, axis=-1)

    def _sample_n(self, key: Array, n: int) -> Array:
        idx = jax.random.categorical(
            key, self._logits, axis=-1, shape=(n, *self._logits.shape[:-1])
        )
        one_hot = jax.nn.one_hot(idx, self.num_classes, dtype=self.dtype)
        return one_hot.reshape(n, *self.batch_shape, -1)

    def log_prob(self, value: Array) -> Array:
        """`sum_{g, c} z_{g,c} log softmax(logits_g)_c`; z `[*lead, G * C]` -> `[*lead]`.

        Also defined for relaxed z on the simplex (the Gumbel-softmax relaxation).
        """
        value = jnp.asarray(value)
        grouped = value.reshape(*value.shape[:-1], self.num_groups, self.num_classes)
        # 0 * (-inf) is 0: a class of zero probability that is not chosen costs nothing.
        terms = jnp.where(grouped == 0, 0.0, grouped * self.log_probs())
        return jnp.sum(terms, axis=(-2, -1))

    def entropy(self) -> Array:
        """`[*batch]` sum of the groups' entropies."""
        log_p = self.log_probs()
        return -jnp.sum(jnp.where(log_p > -jnp.inf, jnp.exp(log_p) * log_p, 0.0), axis=(-2, -1))

    def mean(self) -> Array:
        """`[*batch, G * C]` class probabilities."""
        return jnp.exp(self.log_probs()).reshape(*self.batch_shape, -1)


def grouped_one_hot(logits: Array, num_groups: int | None = None) -> GroupedOneHot:
    """Builds `GroupedOneHot` from `[*batch, G, C]` logits, or flat `[*batch, G * C]`.

    Args:
      logits: `[*batch, G, C]`, or `[*batch, G * C]` with `num_groups` given.
      num_groups: G, to split flat logits (encoder outputs) into groups.

    Returns:
      `GroupedOneHot` with batch `[*batch]`, event `[G * C]`.
    """
    if num_groups is not None:
        check_rank_at_least(logits, 1, "logits")
        width = jnp.shape(logits)[-1]
        if num_groups < 1 or width % num_groups:
            raise ValueError(
                f"`num_groups`={num_groups} must divide the logits' last axis ({width})."
            )
        logits = jnp.reshape(logits, (*jnp.shape(logits)[:-1], num_groups, width // num_groups))
    return GroupedOneHot(logits)


__all__ = ["GroupedOneHot", "grouped_one_hot"]
