"""The variational auto-encoder: encoder q(z|x), decoder p(x|z) and prior p(z) in one module.

`VAE` follows the estimator convention: `posterior(x)` is the `q` and
`log_joint_fn(x)` the `log_joint` that every estimator in `vi_jax.estimators` takes.

    graphdef, params, rest = split_params(vae)        # once, outside jit
    def loss(params, x, key):                         # inside jit
        vae = merge_params(graphdef, params, rest)
        return -jnp.mean(estimator(key, vae.log_joint_fn(x), vae.posterior(x), K))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from vi_jax._validation import check_choice, check_finite, check_positive_int
from vi_jax.families import CONTINUOUS_FAMILIES
from vi_jax.models.encoders import DEFAULT_MIN_SCALE, FamilyEncoder, GaussianEncoder
from vi_jax.models.likelihoods import BernoulliDecoder, GaussianDecoder
from vi_jax.models.networks import (
    MLP,
    ConvDecoderNet,
    ConvEncoderNet,
    as_rngs,
    check_image_shape,
    check_width,
    check_widths,
)
from vi_jax.models.priors import LaplacePrior, MixtureOfGaussiansPrior, StandardNormalPrior
from vi_jax.types import Array

LIKELIHOODS = ("bernoulli", "gaussian")
"""Names accepted by the `likelihood` argument of the constructors."""
PRIORS = ("normal", "laplace", "mog")
"""Names accepted by the `prior` argument of the constructors."""
POSTERIORS = CONTINUOUS_FAMILIES
"""Names accepted by the `posterior` argument of `make_mlp_vae` ("diag" is `GaussianEncoder`)."""


class VAE(nnx.Module):
    """Encoder q(z | x), decoder p(x | z) and prior p(z).

    Shapes: x `[*batch, data]`; q has batch `[*batch]`, event `[latent]`; latents for
    a K-sample estimator are `z [K, *batch, latent]` and log densities `[K, *batch]`.

    Attributes:
      encoder: module `x -> q(z | x)` (a distrax distribution), e.g. `GaussianEncoder`.
      decoder: module `z -> p(x | z)`, e.g. `BernoulliDecoder`, `GaussianDecoder`.
      prior: module `() -> p(z)`, e.g. `StandardNormalPrior`.
      data_dim: width of x.
      latent_dim: width of z.
    """

    def __init__(
        self,
        encoder: nnx.Module,
        decoder: nnx.Module,
        prior: nnx.Module,
        *,
        data_dim: int | None = None,
    ) -> None:
        """Assembles the three parts and checks that their widths agree.

        Args:
          encoder: module mapping `x [*batch, data]` to q with event `[latent]`.
          decoder: module mapping `z [*lead, latent]` to p(x | z) with event `[data]`.
          prior: module returning p(z) with event `[latent]`; needs `latent_dim`.
          data_dim: width of x (taken from the encoder or decoder when they know it).
        """
        for name, part in (("encoder", encoder), ("decoder", decoder), ("prior", prior)):
            if not isinstance(part, nnx.Module):
                raise TypeError(f"`{name}` must be an nnx.Module, got {type(part).__name__}.")
        latent_dim = getattr(prior, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("`prior` must have a `latent_dim` attribute.")
        for name, part in (("encoder", encoder), ("decoder", decoder)):
            d = getattr(part, "latent_dim", None)
            if d is not None and d != latent_dim:
                raise ValueError(
                    f"`{name}` has latent_dim {d} but `prior` has latent_dim {latent_dim}."
                )
        widths = {
            n: w
            for n, w in (
                ("data_dim", data_dim),
                ("encoder", getattr(encoder, "data_dim", None)),
                ("decoder", getattr(decoder, "data_dim", None)),
            )
            if w is not None
        }
        if len(set(widths.values())) > 1:
            raise ValueError(f"data widths disagree: {widths}.")
        if not widths:
            raise ValueError("`data_dim` is required: neither encoder nor decoder states it.")
        self.data_dim = check_width(next(iter(widths.values())), "data_dim")
        self.latent_dim = int(latent_dim)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior

    # ------------------------------------------------------------------ checks

    def _check_x(self, x: Array) -> None:
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != self.data_dim:
            raise ValueError(f"`x` must have shape [*batch, {self.data_dim}], got {jnp.shape(x)}.")
        check_finite(x, "x")

    def _check_z(self, z: Array) -> None:
        if jnp.ndim(z) < 1 or jnp.shape(z)[-1] != self.latent_dim:
            raise ValueError(f"`z` must have shape [*lead, {self.latent_dim}], got {jnp.shape(z)}.")

    # ------------------------------------------------------------------ the model

    def posterior(self, x: Array) -> distrax.Distribution:
        """q(z | x): batch `[*batch]`, event `[latent]`, for x `[*batch, data]`."""
        self._check_x(x)
        return self.encoder(x)

    def prior_distribution(self) -> distrax.Distribution:
        """p(z): batch `[]`, event `[latent]`."""
        return self.prior()

    def decode(self, z: Array) -> distrax.Distribution:
        """p(x | z): batch `[*lead]`, event `[data]`, for z `[*lead, latent]`.

        Its `.mean()` `[*lead, data]` gives pixel probabilities / means (images).
        """
        self._check_z(z)
        return self.decoder(z)

    def log_likelihood_fn(self, x: Array) -> Callable[[Array], Array]:
        """`z [*s, *batch, latent] -> log p(x | z) [*s, *batch]` for x `[*batch, data]`."""
        self._check_x(x)

        def log_likelihood(z: Array) -> Array:
            return self.decode(z).log_prob(x)

        return log_likelihood

    def log_joint_fn(self, x: Array) -> Callable[[Array], Array]:
        """`z [*s, *batch, latent] -> log p(x, z) [*s, *batch]` for x `[*batch, data]`.

        log p(x, z) = log p(z) + log p(x | z); element `[s, b]` depends only on
        `z[s, b]`, as the estimator convention requires.
        """
        log_likelihood = self.log_likelihood_fn(x)
        prior = self.prior()

        def log_joint(z: Array) -> Array:
            self._check_z(z)
            return prior.log_prob(z) + log_likelihood(z)

        return log_joint

    # ------------------------------------------------------------------ generation

    def sample(self, key: Array, num: int) -> Array:
        """Generated data means: z ~ p(z), returns E[x | z] `[num, data]`."""
        num = check_positive_int(num, "num")
        z = self.prior().sample(seed=key, sample_shape=(num,))
        return self.decode(z).mean()

    def simulate(self, key: Array, num: int) -> tuple[Array, Array]:
        """Draws z ~ p(z), x ~ p(x | z); returns z `[num, latent]` and x `[num, data]`."""
        num = check_positive_int(num, "num")
        kz, kx = jax.random.split(key)
        z = self.prior().sample(seed=kz, sample_shape=(num,))
        return z, self.decode(z).sample(seed=kx)

    def reconstruct(self, key: Array, x: Array) -> Array:
        """Reconstructions: z ~ q(z | x), returns E[x | z] `[*batch, data]`."""
        z = self.posterior(x).sample(seed=key)
        return self.decode(z).mean()


# --------------------------------------------------------------------- constructors


def make_prior(
    prior: str,
    latent_dim: int,
    *,
    rngs: nnx.Rngs | int,
    num_components: int = 10,
    laplace_scale: float = 1.0,
) -> nnx.Module:
    """The prior module called `prior` ("normal", "laplace" or "mog") over `[latent]`."""
    check_choice(prior, PRIORS, "prior")
    if prior == "normal":
        return StandardNormalPrior(latent_dim)
    if prior == "laplace":
        return LaplacePrior(latent_dim, laplace_scale)
    return MixtureOfGaussiansPrior(latent_dim, num_components, rngs=rngs)


def _make_decoder(
    likelihood: str, net: nnx.Module, *, learn_scale: bool, obs_scale: float
) -> nnx.Module:
    if likelihood == "bernoulli":
        return BernoulliDecoder(net)
    return GaussianDecoder(net, learn_scale=learn_scale, init_scale=obs_scale)


def make_mlp_vae(
    data_dim: int = 784,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    activation: str = "relu",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    *,
    rngs: nnx.Rngs | int,
    decoder_hidden: Sequence[int] | None = None,
    num_components: int = 10,
    laplace_scale: float = 1.0,
    min_scale: float = DEFAULT_MIN_SCALE,
    learn_obs_scale: bool = True,
    obs_scale: float = 1.0,
    posterior: str = "diag",
    flow_steps: int = 2,
    flow_hidden: int = 64,
    flow_context: int = 16,
    posterior_rank: int = 2,
) -> VAE:
    """A VAE with MLP encoder and decoder.

    Encoder `data -> hidden -> 2 * latent` (mean, softplus scale), decoder
    `latent -> decoder_hidden -> data` (defaults to `hidden` reversed).

    Args:
      data_dim: width of x.
      latent_dim: D >= 1.
      hidden: encoder hidden widths.
      activation: relu, tanh, gelu, softplus, elu or silu.
      likelihood: "bernoulli" (binary / [0, 1] data) or "gaussian" (real data).
      prior: "normal", "laplace" or "mog".
      rngs: `nnx.Rngs` or int seed.
      decoder_hidden: decoder hidden widths (default: `hidden` reversed).
      num_components: mixture components for `prior="mog"`.
      laplace_scale: scale for `prior="laplace"`.
      min_scale: floor of the encoder's standard deviations.
      learn_obs_scale: learn the Gaussian likelihood's per-dimension scale.
      obs_scale: initial (or fixed) Gaussian observation scale.
      posterior: the encoder's family, one of `POSTERIORS`: "diag" (`GaussianEncoder`),
        "fullrank", "lowrank", "iaf", "realnvp" or "spline" (`FamilyEncoder`).
      flow_steps: flow steps >= 1 (flows only).
      flow_hidden: width >= 1 of the flow networks' hidden layer (flows only).
      flow_context: width >= 1 of the context the encoder passes to a flow.
      posterior_rank: covariance factors >= 1 for "lowrank".

    Returns:
      The `VAE`.
    """
    data_dim = check_width(data_dim, "data_dim")
    latent_dim = check_width(latent_dim, "latent_dim")
    hidden = check_widths(hidden, "hidden")
    dec_hidden = (
        tuple(reversed(hidden))
        if decoder_hidden is None
        else check_widths(decoder_hidden, "decoder_hidden")
    )
    check_choice(likelihood, LIKELIHOODS, "likelihood")
    check_choice(prior, PRIORS, "prior")
    check_choice(posterior, POSTERIORS, "posterior")
    rngs = as_rngs(rngs)
    if posterior == "diag":
        encoder = GaussianEncoder.mlp(
            data_dim, hidden, latent_dim, activation=activation, min_scale=min_scale, rngs=rngs
        )
    else:
        encoder = FamilyEncoder.mlp(
            data_dim,
            hidden,
            latent_dim,
            posterior,
            flow_steps=check_width(flow_steps, "flow_steps"),
            flow_hidden=check_width(flow_hidden, "flow_hidden"),
            flow_context=flow_context,
            rank=posterior_rank,
            activation=activation,
            min_scale=min_scale,
            rngs=rngs,
        )
    net = MLP(latent_dim, dec_hidden, data_dim, activation=activation, rngs=rngs)
    decoder = _make_decoder(likelihood, net, learn_scale=learn_obs_scale, obs_scale=obs_scale)
    prior_module = make_prior(
        prior, latent_dim, rngs=rngs, num_components=num_components, laplace_scale=laplace_scale
    )
    return VAE(encoder, decoder, prior_module)


def make_conv_vae(
    latent_dim: int = 16,
    image_shape: Sequence[int] = (28, 28, 1),
    channels: Sequence[int] = (32, 64),
    hidden: int | None = 256,
    activation: str = "relu",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    *,
    rngs: nnx.Rngs | int,
    kernel_size: int = 3,
    num_components: int = 10,
    laplace_scale: float = 1.0,
    min_scale: float = DEFAULT_MIN_SCALE,
    learn_obs_scale: bool = True,
    obs_scale: float = 1.0,
) -> VAE:
    """A convolutional VAE for small images stored flat (`data = H * W * C`).

    Encoder: stride-2 convolutions through `channels`, flatten, dense `hidden`,
    dense `2 * latent`. Decoder (mirror): dense `hidden`, dense to the smallest feature
    map, stride-2 transposed convolutions through `channels` reversed, to C channels.
    For 28x28x1: 784 -> 14x14x32 -> 7x7x64 -> 256 -> 2D and back.

    Args:
      latent_dim: D >= 1.
      image_shape: (H, W, C), H and W divisible by `2 ** len(channels)`.
      channels: encoder convolution channels (the decoder uses them reversed).
      hidden: width of the dense layer between convolutions and latent, or None.
      activation: relu, tanh, gelu, softplus, elu or silu.
      likelihood: "bernoulli" or "gaussian".
      prior: "normal", "laplace" or "mog".
      rngs: `nnx.Rngs` or int seed.
      kernel_size: square kernel size.
      num_components: mixture components for `prior="mog"`.
      laplace_scale: scale for `prior="laplace"`.
      min_scale: floor of the encoder's standard deviations.
      learn_obs_scale: learn the Gaussian likelihood's per-dimension scale.
      obs_scale: initial (or fixed) Gaussian observation scale.

    Returns:
      The `VAE`, with `data_dim = H * W * C`.
    """
    latent_dim = check_width(latent_dim, "latent_dim")
    image_shape = check_image_shape(image_shape)
    channels = check_widths(channels, "channels")
    check_choice(likelihood, LIKELIHOODS, "likelihood")
    check_choice(prior, PRIORS, "prior")
    rngs = as_rngs(rngs)
    enc_net = ConvEncoderNet(
        2 * latent_dim,
        image_shape=image_shape,
        channels=channels,
        hidden=hidden,
        kernel_size=kernel_size,
        activation=activation,
        rngs=rngs,
    )
    encoder = GaussianEncoder(enc_net, latent_dim, min_scale=min_scale)
    dec_net = ConvDecoderNet(
        latent_dim,
        image_shape=image_shape,
        channels=tuple(reversed(channels)),
        hidden=hidden,
        kernel_size=kernel_size,
        activation=activation,
        rngs=rngs,
    )
    decoder = _make_decoder(likelihood, dec_net, learn_scale=learn_obs_scale, obs_scale=obs_scale)
    prior_module = make_prior(
        prior, latent_dim, rngs=rngs, num_components=num_components, laplace_scale=laplace_scale
    )
    return VAE(encoder, decoder, prior_module)


def pytorch_example_vae(*, rngs: nnx.Rngs | int = 0) -> VAE:
    """The model of the PyTorch `examples/vae`: 784-400-(20, 20) ReLU encoder, 20-400-784 decoder.

    Bernoulli likelihood (its BCE loss), standard normal prior, 20 latents. The
    encoder's second head gives a softplus scale here (PyTorch: log-variance), and
    weights use Flax's default initialisers; the architecture and objective match.
    """
    return make_mlp_vae(784, 20, (400,), "relu", "bernoulli", "normal", rngs=rngs)


def iwae_paper_vae(*, rngs: nnx.Rngs | int = 0) -> VAE:
    """Burda, Grosse & Salakhutdinov (2016), one stochastic layer, binarised MNIST.

    Encoder 784-200-200-(50, 50), decoder 50-200-200-784, tanh, Bernoulli likelihood,
    standard normal prior.
    """
    return make_mlp_vae(784, 50, (200, 200), "tanh", "bernoulli", "normal", rngs=rngs)
