"""Diagnostics: importance-weight health, gradient variance/SNR, latent usage."""

from vi_jax.diagnostics.gradient_variance import gradient_statistics
from vi_jax.diagnostics.importance_weights import weight_diagnostics
from vi_jax.diagnostics.latent import active_units as active_units  # the old name
from vi_jax.diagnostics.latent import kl_per_dimension, latent_activity

__all__ = ["gradient_statistics", "kl_per_dimension", "latent_activity", "weight_diagnostics"]
