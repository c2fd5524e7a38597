"""Priors p(z) as modules returning distrax distributions, and KL(q || p) helpers.

Each prior module is called with no argument and returns a distribution with batch
`[]` and event `[latent]`; its `log_prob(z)` maps `z [*lead, latent] -> [*lead]`.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from vi_jax._validation import check_positive_float
from vi_jax.estimators import kl as _kl
from vi_jax.families import MultivariateNormalDiag
from vi_jax.models.encoders import inverse_softplus_scale, softplus_scale
from vi_jax.models.networks import as_rngs, check_width


class StandardNormalPrior(nnx.Module):
    """p(z) = N(0, I_D) (no parameters); closed-form KL against a diagonal Gaussian q.

    Attributes:
      latent_dim: D.
    """

    def __init__(self, latent_dim: int) -> None:
        """Args: latent_dim: D >= 1."""
        self.latent_dim = check_width(latent_dim, "latent_dim")

    def __call__(self) -> MultivariateNormalDiag:
        """The distribution: batch `[]`, event `[latent]`."""
        zeros = jnp.zeros((self.latent_dim,))
        return MultivariateNormalDiag(zeros, jnp.ones_like(zeros))


class LaplacePrior(nnx.Module):
    """p(z) = prod_d Laplace(z_d; 0, scale): a sparsity-inducing prior (no parameters).

    KL against a Gaussian q has no closed form in distrax: Monte Carlo is used.

    Attributes:
      latent_dim: D.
      scale: the Laplace scale b (variance 2 b^2).
    """

    def __init__(self, latent_dim: int, scale: float = 1.0) -> None:
        """Args: latent_dim: D >= 1. scale: b > 0."""
        self.latent_dim = check_width(latent_dim, "latent_dim")
        self.scale = check_positive_float(scale, "scale")

    def __call__(self) -> distrax.Independent:
        """The distribution: batch `[]`, event `[latent]`."""
        loc = jnp.zeros((self.latent_dim,))
        return distrax.Independent(
            distrax.Laplace(loc, jnp.full_like(loc, self.scale)), reinterpreted_batch_ndims=1
        )


class MixtureOfGaussiansPrior(nnx.Module):
    """p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2)) with learnable pi, mu, sigma.

    pi = softmax(logits) (initially uniform), mu initialised N(0, init_spread^2),
    sigma = softplus(raw) + min_scale (initially `init_scale`). The mixture is not
    reparameterisable, which is fine for a prior: we only evaluate its `log_prob`
    (and sample it for generation). KL against q is estimated by Monte Carlo.

    Attributes:
      latent_dim: D.
      num_components: C.
      logits: `[C]` mixture logits.
      means: `[C, D]` component means.
      raw_scales: `[C, D]` unconstrained component scales.
    """

    def __init__(
        self,
        latent_dim: int,
        num_components: int,
        *,
        rngs: nnx.Rngs | int,
        init_spread: float = 1.0,
        init_scale: float = 1.0,
        min_scale: float = 1e-3,
    ) -> None:
        """Builds the parameters.

        Args:
          latent_dim: D >= 1.
          num_components: C >= 1.
          rngs: `nnx.Rngs` (or an int seed) for the random initial means.
          init_spread: standard deviation of the initial means (>= 0).
          init_scale: initial component scale (> min_scale).
          min_scale: floor > 0 of the component scales.
        """
        self.latent_dim = check_width(latent_dim, "latent_dim")
        self.num_components = check_width(num_components, "num_components")
        init_spread = check_positive_float(init_spread, "init_spread", allow_zero=True)
        init_scale = check_positive_float(init_scale, "init_scale")
        self.min_scale = check_positive_float(min_scale, "min_scale")
        rngs = as_rngs(rngs)
        shape = (self.num_components, self.latent_dim)
        self.logits = nnx.Param(jnp.zeros((self.num_components,)))
        self.means = nnx.Param(init_spread * jax.random.normal(rngs.params(), shape))
        raw = inverse_softplus_scale(init_scale, self.min_scale)
        self.raw_scales = nnx.Param(jnp.full(shape, raw))

    def __call__(self) -> distrax.MixtureSameFamily:
        """The distribution: batch `[]`, event `[latent]`."""
        return distrax.MixtureSameFamily(
            mixture_distribution=distrax.Categorical(logits=self.logits[...]),
            components_distribution=distrax.MultivariateNormalDiag(
                self.means[...], softplus_scale(self.raw_scales[...], self.min_scale)
            ),
        )


# --------------------------------------------------------------------------- KL

# The KL helpers live with the estimators; re-exported here where models use them.
analytic_kl = _kl.analytic_kl
kl_is_analytic = _kl.kl_is_analytic
