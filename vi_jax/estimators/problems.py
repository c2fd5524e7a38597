"""Reference problems with known answers, for tests, benchmarks and teaching.

`LinearGaussian` has a closed-form marginal, posterior, ELBO and ELBO gradient for
any Gaussian q; `BinaryLatentGaussian` has binary latents few enough to enumerate.
Both follow the estimator convention: `log_joint_fn(x)` returns a function of
`z [*sample, *batch, latent]` giving `log p(x, z)` of shape `[*sample, *batch]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_positive_int
from vi_jax.types import Array

_LOG_2PI = math.log(2.0 * math.pi)


def _gaussian_log_density(x: Array, mean: Array, scale: Array) -> Array:
    """Log N(x; mean, scale^2 I) summed over the last axis."""
    r = (x - mean) / scale
    return -0.5 * jnp.sum(r**2 + _LOG_2PI + 2.0 * jnp.log(scale), axis=-1)


class LinearGaussian(NamedTuple):
    """z ~ N(0, I_d), x | z ~ N(W z + b, sigma^2 I_n).

    Attributes:
      weight: W, shape `[data, latent]`.
      bias: b, shape `[data]`.
      noise_scale: sigma > 0, scalar.
    """

    weight: Array
    bias: Array
    noise_scale: Array

    @property
    def latent_dim(self) -> int:
        """d, the number of latent dimensions."""
        return self.weight.shape[1]

    @property
    def data_dim(self) -> int:
        """n, the number of observed dimensions."""
        return self.weight.shape[0]

    def prior(self) -> distrax.Distribution:
        """p(z) = N(0, I), event `[latent]`."""
        zeros = jnp.zeros(self.latent_dim, self.weight.dtype)
        return distrax.MultivariateNormalDiag(zeros, jnp.ones_like(zeros))

    def log_likelihood_fn(self, x: Array) -> Callable[[Array], Array]:
        """Returns `z [*s, *batch, latent] -> log p(x | z) [*s, *batch]` for x `[*batch, data]`."""

        def log_likelihood(z: Array) -> Array:
            mean = z @ self.weight.T + self.bias
            return _gaussian_log_density(x, mean, self.noise_scale)

        return log_likelihood

    def log_joint_fn(self, x: Array) -> Callable[[Array], Array]:
        """Returns `z [*s, *batch, latent] -> log p(x, z) [*s, *batch]` for x `[*batch, data]`."""
        log_likelihood = self.log_likelihood_fn(x)

        def log_joint(z: Array) -> Array:
            return log_likelihood(z) + _gaussian_log_density(z, 0.0, jnp.ones((), z.dtype))

        return log_joint

    def marginal(self) -> distrax.Distribution:
        """p(x) = N(b, W W^T + sigma^2 I), event `[data]`."""
        cov = self.weight @ self.weight.T + self.noise_scale**2 * jnp.eye(self.data_dim)
        return distrax.MultivariateNormalFullCovariance(self.bias, cov)

    def log_marginal(self, x: Array) -> Array:
        """Exact log p(x), shape `[*batch]` for x `[*batch, data]`."""
        return self.marginal().log_prob(x)

    def posterior_params(self, x: Array) -> tuple[Array, Array]:
        """Exact posterior mean `[*batch, latent]` and covariance `[latent, latent]`."""
        eye = jnp.eye(self.latent_dim, dtype=self.weight.dtype)
        precision = eye + self.weight.T @ self.weight / self.noise_scale**2
        cov = jnp.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        mean = ((x - self.bias) @ self.weight / self.noise_scale**2) @ cov
        return mean, cov

    def posterior(self, x: Array) -> distrax.Distribution:
        """Exact p(z | x) as a reparameterised full-rank Gaussian, batch `[*batch]`."""
        mean, cov = self.posterior_params(x)
        scale_tri = jnp.broadcast_to(jnp.linalg.cholesky(cov), mean.shape[:-1] + cov.shape)
        return distrax.MultivariateNormalTri(mean, scale_tri)

    def elbo(self, x: Array, loc: Array, scale_tri: Array) -> Array:
        """Exact ELBO for q = N(loc, L L^T).

        Args:
          x: data `[*batch, data]`.
          loc: q's mean `[*batch, latent]`.
          scale_tri: lower-triangular L `[*batch, latent, latent]` with positive
            diagonal (a diagonal matrix for mean-field q).

        Returns:
          E_q[log p(x, z) - log q(z)], shape `[*batch]`; differentiable in all inputs, so
          `jax.grad` of it is the exact ELBO gradient.
        """
        n, d = self.data_dim, self.latent_dim
        s2 = self.noise_scale**2
        cov = scale_tri @ jnp.swapaxes(scale_tri, -1, -2)
        resid = x - loc @ self.weight.T - self.bias
        trace_wsw = jnp.sum((self.weight @ cov) * self.weight, axis=(-2, -1))
        expected_ll = (
            -0.5 * n * (_LOG_2PI + jnp.log(s2)) - 0.5 * (jnp.sum(resid**2, -1) + trace_wsw) / s2
        )
        expected_prior = -0.5 * d * _LOG_2PI - 0.5 * (
            jnp.sum(loc**2, -1) + jnp.trace(cov, axis1=-2, axis2=-1)
        )
        log_diag = jnp.log(jnp.abs(jnp.diagonal(scale_tri, axis1=-2, axis2=-1)))
        entropy = 0.5 * d * (_LOG_2PI + 1.0) + jnp.sum(log_diag, -1)
        return expected_ll + expected_prior + entropy

    def sample(self, key: Array, num: int) -> tuple[Array, Array]:
        """Draws `num` pairs: returns x `[num, data]` and z `[num, latent]`."""
        num = check_positive_int(num, "num")
        kz, kx = jax.random.split(key)
        z = jax.random.normal(kz, (num, self.latent_dim), self.weight.dtype)
        noise = jax.random.normal(kx, (num, self.data_dim), self.weight.dtype)
        return z @ self.weight.T + self.bias + self.noise_scale * noise, z


def make_linear_gaussian(
    key: Array, data_dim: int = 5, latent_dim: int = 2, noise_scale: float = 0.5
) -> LinearGaussian:
    """A random `LinearGaussian` with W ~ N(0, 1/latent), b ~ N(0, 1)."""
    data_dim = check_positive_int(data_dim, "data_dim")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if not noise_scale > 0:
        raise ValueError(f"`noise_scale` must be > 0, got {noise_scale}.")
    kw, kb = jax.random.split(key)
    dtype = jnp.zeros(()).dtype
    weight = jax.random.normal(kw, (data_dim, latent_dim), dtype) / math.sqrt(latent_dim)
    bias = jax.random.normal(kb, (data_dim,), dtype)
    return LinearGaussian(weight, bias, jnp.asarray(noise_scale, dtype))


class BinaryLatentGaussian(NamedTuple):
    """z_d ~ Bernoulli(sigmoid(prior_logits_d)) independently, x | z ~ N(W z + b, sigma^2 I).

    With D latents, {0,1}^D has 2^D points: small D is enumerable.

    Attributes:
      prior_logits: `[latent]`.
      weight: `[data, latent]`.
      bias: `[data]`.
      noise_scale: scalar > 0.
    """

    prior_logits: Array
    weight: Array
    bias: Array
    noise_scale: Array

    @property
    def latent_dim(self) -> int:
        """D, the number of binary latents."""
        return self.weight.shape[1]

    def prior(self) -> distrax.Distribution:
        """p(z), independent Bernoulli with event `[latent]` (float samples)."""
        return distrax.Independent(
            distrax.Bernoulli(logits=self.prior_logits, dtype=self.weight.dtype), 1
        )

    def log_joint_fn(self, x: Array) -> Callable[[Array], Array]:
        """Returns `z [*s, *batch, latent] -> log p(x, z) [*s, *batch]` for x `[*batch, data]`."""

        def log_joint(z: Array) -> Array:
            z = z.astype(self.weight.dtype)
            log_prior = jnp.sum(
                z * jax.nn.log_sigmoid(self.prior_logits)
                + (1 - z) * jax.nn.log_sigmoid(-self.prior_logits),
                axis=-1,
            )
            mean = z @ self.weight.T + self.bias
            return log_prior + _gaussian_log_density(x, mean, self.noise_scale)

        return log_joint

    def sample(self, key: Array, num: int) -> tuple[Array, Array]:
        """Draws `num` pairs: returns x `[num, data]` and z `[num, latent]` (float 0/1)."""
        num = check_positive_int(num, "num")
        kz, kx = jax.random.split(key)
        z = jax.random.bernoulli(kz, jax.nn.sigmoid(self.prior_logits), (num, self.latent_dim))
        z = z.astype(self.weight.dtype)
        noise = jax.random.normal(kx, (num, self.weight.shape[0]), self.weight.dtype)
        return z @ self.weight.T + self.bias + self.noise_scale * noise, z


def make_binary_latent_gaussian(
    key: Array, data_dim: int = 8, latent_dim: int = 6, noise_scale: float = 0.7
) -> BinaryLatentGaussian:
    """A random `BinaryLatentGaussian` with N(0, 1) weights and logits."""
    data_dim = check_positive_int(data_dim, "data_dim")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if not noise_scale > 0:
        raise ValueError(f"`noise_scale` must be > 0, got {noise_scale}.")
    kl, kw, kb = jax.random.split(key, 3)
    dtype = jnp.zeros(()).dtype
    return BinaryLatentGaussian(
        jax.random.normal(kl, (latent_dim,), dtype),
        jax.random.normal(kw, (data_dim, latent_dim), dtype),
        jax.random.normal(kb, (data_dim,), dtype),
        jnp.asarray(noise_scale, dtype),
    )
