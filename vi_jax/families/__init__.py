"""Variational families: distrax distributions for q (discrete ones here; flows elsewhere).

Imports only jax, distrax, numpy and `vi_jax._validation` (no Flax), so estimators,
models and notebooks can all build a q from arrays.
"""

from vi_jax.families.bernoulli import factorised_bernoulli
from vi_jax.families.categorical import GroupedOneHot, grouped_one_hot

__all__ = ["GroupedOneHot", "factorised_bernoulli", "grouped_one_hot"]
