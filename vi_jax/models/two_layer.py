"""The two-stochastic-layer VAE of Burda, Grosse & Salakhutdinov (2016).

    q(z1, z2 | x) = q(z1 | x) q(z2 | z1),      p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1),

with Gaussian stochastic layers and a Bernoulli output. The estimators of
`vi_jax.estimators` take one latent array, so both layers travel as one vector
z = concat(z1, z2) `[*lead, d1 + d2]`: q and p(z) are `TwoLevelGaussian`
distributions (ancestral sampling, `log_prob` splitting the vector), and the decoder
reads z1 only. The result is a plain `VAE`: training, every estimator, `vae_view`,
evaluation and AIS use it unchanged.

Path-only estimators (STL, DReG) build log q with q's parameters held fixed from the
z-gradient of `q.log_prob` (`vi_jax.estimators._common.log_prob_path_only`). For a
`TwoLevelGaussian` that gradient includes the dependence of q(z2 | z1) on z1, because
`log_prob` recomputes the conditional from the z1 block of its argument: the gradient
is d log q / dz . dz / dphi for the hierarchical reparameterisation
z1 = mu1(x) + s1(x) e1, z2 = mu2(z1) + s2(z1) e2, as DReG needs (Tucker et al. 2019;
Bauer & Mnih 2021 for hierarchical q).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from vi_jax import _prng
from vi_jax._validation import check_callable, check_choice
from vi_jax.models.encoders import DEFAULT_MIN_SCALE, GaussianEncoder
from vi_jax.models.likelihoods import BernoulliDecoder, GaussianDecoder
from vi_jax.models.networks import MLP, as_rngs, check_width, check_widths
from vi_jax.models.vae import LIKELIHOODS, VAE
from vi_jax.types import Array

Conditional = Callable[[Array], tuple[Array, Array]]

_LOG_2PI = math.log(2.0 * math.pi)


def _normal_log_prob(z: Array, loc: Array, scale: Array) -> Array:
    r = (z - loc) / scale
    return -0.5 * jnp.sum(r**2 + _LOG_2PI, axis=-1) - jnp.sum(jnp.log(scale), axis=-1)


class TwoLevelGaussian(distrax.Distribution):
    """z = concat of a root block r ~ N(loc, diag(scale^2)) and a child c | r ~ N(mu(r), s(r)^2).

    With `root_first` the vector is `[r, c]` (q(z1 | x) q(z2 | z1)); otherwise it is
    `[c, r]` (p(z2) p(z1 | z2) with z = concat(z1, z2)).

    Shapes: batch `[*batch]` (that of `root_loc` without its last axis), event
    `[root + child]`; `log_prob(z [*lead, *batch, D]) -> [*lead, *batch]`.
    """

    def __init__(
        self,
        root_loc: Array,
        root_scale: Array,
        conditional: Conditional,
        child_dim: int,
        *,
        root_first: bool = True,
    ) -> None:
        """Builds the distribution.

        Args:
          root_loc: `[*batch, root]` means of the root block.
          root_scale: `[*batch, root]` standard deviations > 0.
          conditional: `r [*lead, root] -> (loc, scale)`, each `[*lead, child]`.
          child_dim: width of the child block.
          root_first: whether the root block comes first in z.
        """
        check_callable(conditional, "conditional")
        self._root_loc = jnp.asarray(root_loc)
        self._root_scale = jnp.broadcast_to(jnp.asarray(root_scale), self._root_loc.shape)
        self._conditional = conditional
        self._child_dim = check_width(child_dim, "child_dim")
        self._root_first = bool(root_first)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """`(root + child,)`."""
        return (self._root_loc.shape[-1] + self._child_dim,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The root parameters' leading shape."""
        return tuple(self._root_loc.shape[:-1])

    @property
    def dtype(self):
        """The samples' dtype."""
        return self._root_loc.dtype

    def _join(self, root: Array, child: Array) -> Array:
        parts = (root, child) if self._root_first else (child, root)
        return jnp.concatenate(parts, axis=-1)

    def split(self, z: Array) -> tuple[Array, Array]:
        """`(root, child)` blocks of `z [..., D]`."""
        d_root = self._root_loc.shape[-1]
        if self._root_first:
            return z[..., :d_root], z[..., d_root:]
        return z[..., self._child_dim :], z[..., : self._child_dim]

    def _sample_n(self, key: Array, n: int) -> Array:
        k_root, k_child = jax.random.split(key)
        shape = (n, *self._root_loc.shape)
        root = self._root_loc + self._root_scale * _prng.normal(k_root, shape, self.dtype)
        loc, scale = self._conditional(root)
        child = loc + scale * _prng.normal(k_child, jnp.shape(loc), self.dtype)
        return self._join(root, child)

    def log_prob(self, value: Array) -> Array:
        """Log r(root) + log c(child | root), `[*lead, *batch]`."""
        root, child = self.split(value)
        loc, scale = self._conditional(root)
        return _normal_log_prob(root, self._root_loc, self._root_scale) + _normal_log_prob(
            child, loc, scale
        )

    def mean(self) -> Array:
        """`[*batch, D]`: E[root] exactly, the child's conditional mean at E[root].

        The child block is exact for a linear conditional mean and a plug-in value
        otherwise (used for Burda et al.'s active-unit statistic).
        """
        loc, _ = self._conditional(self._root_loc)
        return self._join(self._root_loc, loc)


class TwoLayerEncoder(nnx.Module):
    """x -> q(z1, z2 | x) = q(z1 | x) q(z2 | z1), a `TwoLevelGaussian` over concat(z1, z2).

    Attributes:
      lower: `GaussianEncoder` x -> q(z1 | x).
      upper: `GaussianEncoder` z1 -> q(z2 | z1).
      data_dim: width of x.
      latent_dim: d1 + d2.
    """

    def __init__(self, lower: GaussianEncoder, upper: GaussianEncoder) -> None:
        """Stacks q(z1 | x) and q(z2 | z1)."""
        self.lower, self.upper = lower, upper
        self.data_dim = lower.data_dim
        self.dims = (lower.latent_dim, upper.latent_dim)
        self.latent_dim = sum(self.dims)

    def __call__(self, x: Array) -> TwoLevelGaussian:
        """q(z | x): batch `[*batch]`, event `[d1 + d2]`, for x `[*batch, data]`."""
        loc, scale = self.lower.loc_scale(x)
        return TwoLevelGaussian(loc, scale, self.upper.loc_scale, self.dims[1], root_first=True)


class TwoLayerPrior(nnx.Module):
    """p(z1, z2) = N(z2; 0, I) p(z1 | z2), a `TwoLevelGaussian` over concat(z1, z2).

    Attributes:
      conditional: `GaussianEncoder` z2 -> p(z1 | z2).
      latent_dim: d1 + d2.
    """

    def __init__(self, conditional: GaussianEncoder, top_dim: int) -> None:
        """Args: conditional: z2 -> p(z1 | z2). top_dim: d2."""
        self.conditional = conditional
        self.dims = (conditional.latent_dim, check_width(top_dim, "top_dim"))
        self.latent_dim = sum(self.dims)

    def __call__(self) -> TwoLevelGaussian:
        """The distribution: batch `[]`, event `[d1 + d2]`."""
        zeros = jnp.zeros((self.dims[1],))
        return TwoLevelGaussian(
            zeros, jnp.ones_like(zeros), self.conditional.loc_scale, self.dims[0], root_first=False
        )


class FirstLayerDecoder(nnx.Module):
    """z = concat(z1, z2) -> p(x | z1): a decoder that reads the first `d1` latents.

    Attributes:
      decoder: the decoder of z1 (e.g. `BernoulliDecoder`).
      data_dim: width of x.
      latent_dim: d1 + d2.
    """

    def __init__(self, decoder: nnx.Module, dims: tuple[int, int]) -> None:
        """Args: decoder: z1 -> p(x | z1). dims: (d1, d2)."""
        self.decoder = decoder
        self.dims = tuple(int(d) for d in dims)
        self.data_dim = getattr(decoder, "data_dim", None)
        self.latent_dim = sum(self.dims)

    def __call__(self, z: Array) -> distrax.Distribution:
        """p(x | z1): batch `[*lead]`, event `[data]`, for z `[*lead, d1 + d2]`."""
        return self.decoder(z[..., : self.dims[0]])


def make_two_layer_vae(
    data_dim: int = 784,
    latent_dims: Sequence[int] = (100, 50),
    hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
    activation: str = "tanh",
    likelihood: str = "bernoulli",
    *,
    rngs: nnx.Rngs | int,
    min_scale: float = DEFAULT_MIN_SCALE,
) -> VAE:
    """A VAE with two Gaussian stochastic layers, z = concat(z1, z2).

    q(z1 | x): data -> hidden[0] -> 2 d1; q(z2 | z1): d1 -> hidden[1] -> 2 d2;
    p(z1 | z2): d2 -> reversed(hidden[1]) -> 2 d1; p(x | z1): d1 -> reversed(hidden[0]) -> data.

    Args:
      data_dim: width of x.
      latent_dims: (d1, d2).
      hidden: hidden widths of the (x, z1) and the (z1, z2) networks.
      activation: relu, tanh, gelu, softplus, elu or silu.
      likelihood: "bernoulli" or "gaussian".
      rngs: `nnx.Rngs` or int seed.
      min_scale: floor of every Gaussian layer's standard deviations.

    Returns:
      A `VAE` whose latent width is d1 + d2.
    """
    data_dim = check_width(data_dim, "data_dim")
    if len(latent_dims) != 2 or len(hidden) != 2:
        raise ValueError(
            f"`latent_dims` and `hidden` must have two entries (one per stochastic layer), "
            f"got {latent_dims!r} and {hidden!r}."
        )
    d1, d2 = (check_width(d, "latent_dims") for d in latent_dims)
    h1, h2 = (check_widths(h, "hidden") for h in hidden)
    check_choice(likelihood, LIKELIHOODS, "likelihood")
    rngs = as_rngs(rngs)
    kw = dict(activation=activation, min_scale=min_scale, rngs=rngs)
    encoder = TwoLayerEncoder(
        GaussianEncoder.mlp(data_dim, h1, d1, **kw), GaussianEncoder.mlp(d1, h2, d2, **kw)
    )
    prior = TwoLayerPrior(GaussianEncoder.mlp(d2, tuple(reversed(h2)), d1, **kw), d2)
    net = MLP(d1, tuple(reversed(h1)), data_dim, activation=activation, rngs=rngs)
    inner = BernoulliDecoder(net) if likelihood == "bernoulli" else GaussianDecoder(net)
    return VAE(encoder, FirstLayerDecoder(inner, (d1, d2)), prior)


def iwae_paper_two_layer_vae(*, rngs: nnx.Rngs | int = 0) -> VAE:
    """Burda, Grosse & Salakhutdinov (2016), two stochastic layers, binarised MNIST.

    784 -(200-200 tanh)-> z1 (100) -(100-100 tanh)-> z2 (50) and back, Bernoulli output.
    """
    return make_two_layer_vae(784, (100, 50), ((200, 200), (100, 100)), "tanh", rngs=rngs)
