"""VAEs with discrete latents: sigmoid-belief-net style binary VAEs and a categorical one.

p(z) = prod_d Bernoulli(z_d; sigmoid(a_d)) with learnable logits a, p(x | z) a Bernoulli
decoder, q(z | x) a factorised Bernoulli (or grouped one-hot) from an encoder network.
They are `VAE`s, so `vae_view`, `make_vae_loss`, the trainer and evaluation take them
unchanged; any discrete-capable estimator of `vi_jax.estimators` trains them.

The sizes of the discrete-estimator literature (Yin & Zhou 2019; Dong et al. 2020):
"linear" 784 <- 200 binary latents (linear encoder and decoder) and "nonlinear"
784-200-200 with tanh; and the lecture's model with 20 binary latents, whose decoder is
linear so that the exact log p(x) over all 2^20 configurations is a few CPU seconds per
image (`BinaryVAE.exact_log_marginal`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax._validation import check_positive_int, is_concrete
from vi_jax.estimators.enumeration import enumerate_binary_log_marginal
from vi_jax.families import factorised_bernoulli, grouped_one_hot
from vi_jax.models.likelihoods import BernoulliDecoder
from vi_jax.models.networks import MLP, as_rngs, check_width, check_widths
from vi_jax.models.vae import VAE
from vi_jax.types import Array

LATENT_TYPES = ("bernoulli", "categorical")
"""Names accepted by `latent_type`."""

MAX_ENUMERATED_LATENTS = 24
"""Largest D for which `BinaryVAE.exact_log_marginal` enumerates {0,1}^D."""


class BernoulliEncoder(nnx.Module):
    """q(z | x) = prod_d Bernoulli(z_d; sigmoid(net(x)_d)), batch `[*batch]`, event `[D]`."""

    def __init__(self, net: nnx.Module, latent_dim: int) -> None:
        """Wraps a logit network.

        Args:
          net: maps `x [*batch, data]` to logits `[*batch, latent_dim]`.
          latent_dim: D.
        """
        self.net = net
        self.latent_dim = check_width(latent_dim, "latent_dim")
        self.data_dim = getattr(net, "in_features", None)

    def __call__(self, x: Array) -> distrax.Distribution:
        """q(z | x) for x `[*batch, data]`."""
        return factorised_bernoulli(self.net(x))


class CategoricalEncoder(nnx.Module):
    """q(z | x): G independent C-way one-hots, flattened to event `[G * C]`."""

    def __init__(self, net: nnx.Module, num_groups: int, num_classes: int) -> None:
        """Wraps a logit network.

        Args:
          net: maps `x [*batch, data]` to logits `[*batch, G * C]`.
          num_groups: G.
          num_classes: C >= 2.
        """
        self.net = net
        self.num_groups = check_positive_int(num_groups, "num_groups")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.latent_dim = self.num_groups * self.num_classes
        self.data_dim = getattr(net, "in_features", None)

    def __call__(self, x: Array) -> distrax.Distribution:
        """q(z | x) for x `[*batch, data]`."""
        return grouped_one_hot(self.net(x), self.num_groups)


class BernoulliPrior(nnx.Module):
    """p(z) = prod_d Bernoulli(z_d; sigmoid(a_d)) with learnable logits a `[D]` (init 0)."""

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = check_width(latent_dim, "latent_dim")
        self.logits = nnx.Param(jnp.zeros((self.latent_dim,)))

    def __call__(self) -> distrax.Distribution:
        """p(z), batch `[]`, event `[D]`."""
        return factorised_bernoulli(self.logits[...])


class CategoricalPrior(nnx.Module):
    """p(z) = prod_g OneHotCategorical(softmax(a_g)), learnable logits a `[G, C]` (init 0)."""

    def __init__(self, num_groups: int, num_classes: int) -> None:
        self.num_groups = check_positive_int(num_groups, "num_groups")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.latent_dim = self.num_groups * self.num_classes
        self.logits = nnx.Param(jnp.zeros((self.num_groups, self.num_classes)))

    def __call__(self) -> distrax.Distribution:
        """p(z), batch `[]`, event `[G * C]`."""
        return grouped_one_hot(self.logits[...])


class BinaryVAE(VAE):
    """A `VAE` with discrete latents, binary data, and an optional NVIL baseline network.

    `x` must be binary ({0, 1}): the Bernoulli likelihood of grey levels is not a
    probability, so concrete non-binary data are refused (use
    `vi_jax.data.dynamic_binarize`).

    Attributes:
      baseline_net: None, or a network `x [*batch, data] -> [*batch, 1]` giving NVIL's
        input-dependent baseline C(x) (see `baseline`).
    """

    def __init__(
        self,
        encoder: nnx.Module,
        decoder: nnx.Module,
        prior: nnx.Module,
        *,
        baseline_net: nnx.Module | None = None,
        data_dim: int | None = None,
    ) -> None:
        super().__init__(encoder, decoder, prior, data_dim=data_dim)
        self.baseline_net = baseline_net

    def _check_x(self, x: Array) -> None:
        super()._check_x(x)
        if is_concrete(x):
            arr = np.asarray(x)
            if arr.size and not np.all((arr == 0) | (arr == 1)):
                bad = int(np.count_nonzero((arr != 0) & (arr != 1)))
                raise ValueError(
                    f"`x` must be binary (0 or 1) for a Bernoulli decoder; {bad} entries are "
                    "not. Binarise grey levels first (`vi_jax.data.dynamic_binarize`)."
                )

    def baseline(self, x: Array) -> Array:
        """NVIL's baseline C(x) `[*batch]` (zeros without a baseline network)."""
        if self.baseline_net is None:
            return jnp.zeros(jnp.shape(x)[:-1])
        return self.baseline_net(x)[..., 0]

    def exact_log_marginal(
        self, x: Array, *, chunk_size: int = 4096, max_latents: int = MAX_ENUMERATED_LATENTS
    ) -> Array:
        """Exact log p(x) = log sum over all 2^D binary z of p(x, z), chunked.

        Args:
          x: `[*batch, data]` binary data.
          chunk_size: configurations per chunk (static).
          max_latents: refuse D above this (the default 24 is ~16M configurations).

        Returns:
          `[*batch]` log p(x).

        Raises:
          ValueError: for categorical latents, or D > `max_latents` (the message states
            the time it would take, from a timed chunk of this model).
        """
        if not isinstance(self.prior, BernoulliPrior):
            raise ValueError("`exact_log_marginal` enumerates binary latents only.")
        d = self.latent_dim
        batch = tuple(jnp.shape(x)[:-1])
        log_joint = self.log_joint_fn(x)
        if d > max_latents:
            z = jnp.zeros((chunk_size, *batch, d))
            jax.block_until_ready(log_joint(z))
            start = time.perf_counter()
            jax.block_until_ready(log_joint(z))
            per_chunk = time.perf_counter() - start
            seconds = per_chunk * 2**d / chunk_size
            raise ValueError(
                f"`num_latents` D = {d} is above the enumeration limit {max_latents}: 2^{d} = "
                f"{2**d:.4g} configurations would take ~{seconds:.3g} s here for this batch "
                f"({per_chunk * 1e3:.3g} ms per chunk of {chunk_size}). Estimate log p(x) "
                "by importance sampling instead (`vi_jax.inference.evaluate_model`)."
            )
        return enumerate_binary_log_marginal(log_joint, d, chunk_size=chunk_size, batch_shape=batch)


class _Baseline(nnx.Module):
    """NVIL's baseline network x -> C(x) `[*batch, 1]`: an MLP on x centred at 1/2."""

    def __init__(self, data_dim: int, hidden: Sequence[int], *, rngs: nnx.Rngs) -> None:
        self.net = MLP(data_dim, hidden, 1, activation="tanh", rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.net(x - 0.5)


def make_binary_vae(
    data_dim: int = 784,
    latent_dim: int = 200,
    hidden: Sequence[int] = (),
    activation: str = "tanh",
    *,
    rngs: nnx.Rngs | int,
    latent_type: str = "bernoulli",
    num_classes: int = 2,
    decoder_hidden: Sequence[int] | None = None,
    baseline_hidden: Sequence[int] | None = (100,),
) -> BinaryVAE:
    """A binary-latent (or grouped categorical) VAE with a Bernoulli likelihood.

    Encoder `data -> hidden -> latent logits`, decoder `latent -> decoder_hidden -> data`
    logits (default: `hidden` reversed); empty `hidden` is linear. Prior logits learnable.

    Args:
      data_dim: width of x.
      latent_dim: D binary latents ("bernoulli"), or the number of groups G
        ("categorical": the latent vector is `[G * num_classes]`).
      hidden: encoder hidden widths.
      activation: hidden activation (relu, tanh, ...).
      rngs: `nnx.Rngs` or int seed.
      latent_type: "bernoulli" or "categorical".
      num_classes: C >= 2 classes per group ("categorical").
      decoder_hidden: decoder hidden widths (default: `hidden` reversed).
      baseline_hidden: hidden widths of NVIL's baseline network, or None for none.

    Returns:
      The `BinaryVAE`.
    """
    data_dim = check_width(data_dim, "data_dim")
    latent_dim = check_width(latent_dim, "latent_dim")
    hidden = check_widths(hidden, "hidden") if len(hidden) else ()
    if latent_type not in LATENT_TYPES:
        raise ValueError(f"`latent_type` must be one of {list(LATENT_TYPES)}, got {latent_type!r}.")
    dec_hidden = (
        tuple(reversed(hidden))
        if decoder_hidden is None
        else (check_widths(decoder_hidden, "decoder_hidden") if len(decoder_hidden) else ())
    )
    rngs = as_rngs(rngs)
    if latent_type == "bernoulli":
        width = latent_dim
        enc_net = MLP(data_dim, hidden, width, activation=activation, rngs=rngs)
        encoder = BernoulliEncoder(enc_net, width)
        prior = BernoulliPrior(width)
    else:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
        width = latent_dim * num_classes
        enc_net = MLP(data_dim, hidden, width, activation=activation, rngs=rngs)
        encoder = CategoricalEncoder(enc_net, latent_dim, num_classes)
        prior = CategoricalPrior(latent_dim, num_classes)
    dec_net = MLP(width, dec_hidden, data_dim, activation=activation, rngs=rngs)
    baseline = (
        None if baseline_hidden is None else _Baseline(data_dim, tuple(baseline_hidden), rngs=rngs)
    )
    return BinaryVAE(encoder, BernoulliDecoder(dec_net), prior, baseline_net=baseline)


def linear_binary_vae(data_dim: int = 784, *, rngs: nnx.Rngs | int = 0) -> BinaryVAE:
    """The "linear" model of the ARM/DisARM papers: 784 <- 200 binary latents, linear maps."""
    return make_binary_vae(data_dim, 200, (), rngs=rngs)


def nonlinear_binary_vae(data_dim: int = 784, *, rngs: nnx.Rngs | int = 0) -> BinaryVAE:
    """The "nonlinear" model: 784-200-200 tanh encoder, 200-200-784 decoder, 200 latents."""
    return make_binary_vae(data_dim, 200, (200,), "tanh", rngs=rngs)


def lecture_binary_vae(data_dim: int = 784, *, rngs: nnx.Rngs | int = 0) -> BinaryVAE:
    """The lecture's model: 20 binary latents, a 200-unit tanh encoder, a linear decoder.

    The decoder is linear (784 <- 20) so that the exact log p(x), a sum over all 2^20
    configurations, costs a few CPU seconds per image.
    """
    return make_binary_vae(data_dim, 20, (200,), "tanh", rngs=rngs, decoder_hidden=())


__all__ = [
    "LATENT_TYPES",
    "MAX_ENUMERATED_LATENTS",
    "BernoulliEncoder",
    "BernoulliPrior",
    "BinaryVAE",
    "CategoricalEncoder",
    "CategoricalPrior",
    "lecture_binary_vae",
    "linear_binary_vae",
    "make_binary_vae",
    "nonlinear_binary_vae",
]
