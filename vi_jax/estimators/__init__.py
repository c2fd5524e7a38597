"""Estimators: pure, keyed functions for marginals, bounds and gradient estimators."""

from vi_jax.estimators._common import is_reparameterized
from vi_jax.estimators.bounds import (
    cubo,
    elbo,
    elbo_entropy,
    elbo_kl,
    iwae_bound,
    kl_divergence,
    log_weights,
    renyi_bound,
)
from vi_jax.estimators.gradients import (
    ESTIMATORS,
    elbo_pathwise,
    elbo_score_function,
    elbo_score_function_loo,
    elbo_stl,
    iwae_dreg,
    iwae_pathwise,
    iwae_stl,
    renyi_pathwise,
    update_moving_average,
    vimco,
)
from vi_jax.estimators.problems import (
    BinaryLatentGaussian,
    LinearGaussian,
    make_binary_latent_gaussian,
    make_linear_gaussian,
)
