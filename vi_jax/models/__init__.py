"""Models: Flax NNX encoders/decoders, distrax likelihoods and priors, VAE assembly, losses."""

from vi_jax.models.encoders import (
    DEFAULT_MIN_SCALE,
    GaussianEncoder,
    inverse_softplus_scale,
    softplus_scale,
)
from vi_jax.models.functional import count_params, merge_params, split_params
from vi_jax.models.likelihoods import (
    BernoulliDecoder,
    GaussianDecoder,
    LogitBernoulli,
    bernoulli_likelihood,
    gaussian_likelihood,
)
from vi_jax.models.loss import batch_data, make_vae_loss
from vi_jax.models.networks import (
    ACTIVATIONS,
    MLP,
    ConvDecoderNet,
    ConvEncoderNet,
    flatten_leading,
    get_activation,
    unflatten_leading,
)
from vi_jax.models.priors import (
    LaplacePrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    analytic_kl,
    kl_is_analytic,
)
from vi_jax.models.vae import (
    LIKELIHOODS,
    PRIORS,
    VAE,
    iwae_paper_vae,
    make_conv_vae,
    make_mlp_vae,
    make_prior,
    pytorch_example_vae,
)
from vi_jax.models.view import vae_view

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MIN_SCALE",
    "LIKELIHOODS",
    "MLP",
    "PRIORS",
    "VAE",
    "BernoulliDecoder",
    "ConvDecoderNet",
    "ConvEncoderNet",
    "GaussianDecoder",
    "GaussianEncoder",
    "LaplacePrior",
    "LogitBernoulli",
    "MixtureOfGaussiansPrior",
    "StandardNormalPrior",
    "analytic_kl",
    "batch_data",
    "bernoulli_likelihood",
    "count_params",
    "gaussian_likelihood",
    "flatten_leading",
    "get_activation",
    "unflatten_leading",
    "inverse_softplus_scale",
    "iwae_paper_vae",
    "kl_is_analytic",
    "make_conv_vae",
    "make_mlp_vae",
    "make_prior",
    "make_vae_loss",
    "merge_params",
    "pytorch_example_vae",
    "softplus_scale",
    "split_params",
    "vae_view",
]
