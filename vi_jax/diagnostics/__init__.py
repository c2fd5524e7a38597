"""Diagnostics: importance-weight health, gradient variance/SNR, latent usage."""

from vi_jax.diagnostics.gradient_variance import gradient_statistics
from vi_jax.diagnostics.importance_weights import weight_diagnostics
from vi_jax.diagnostics.latent import active_units, kl_per_dimension

__all__ = ["active_units", "gradient_statistics", "kl_per_dimension", "weight_diagnostics"]
