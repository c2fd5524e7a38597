"""Data-dependent initialisation: a Bernoulli decoder's output bias at the mean image.

With the output bias at zero every pixel starts at probability 1/2 (543 nats per MNIST
image), and a VAE first spends its steps learning the mean image; meanwhile the KL term
can switch its latents off for good (the two-stochastic-layer VAE does, see
benchmarks/README.md, issue 14). Burda et al.'s code and the public TF2 IWAE
reproduction (github.com/nbip/IWAE) start the bias at the logit of the mean training
image instead, so that from step 0 the decoder outputs about the mean image.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax._validation import check_finite, check_rank, is_concrete
from vi_jax.models.likelihoods import BernoulliDecoder
from vi_jax.models.networks import MLP
from vi_jax.models.two_layer import FirstLayerDecoder
from vi_jax.models.vae import VAE
from vi_jax.types import Array

DEFAULT_BIAS_EPS = 1e-3
"""Clip of the mean pixel before the logit: a pixel never on in training gets logit(1e-3)."""


def mean_logits(x: Array, eps: float = DEFAULT_BIAS_EPS) -> Array:
    """logit(clip(mean over examples of x, eps, 1 - eps)).

    Args:
      x: data in [0, 1], `[N, D]` (binary images or their grey levels).
      eps: clip in (0, 1/2), so that a pixel always (never) on gets a finite logit.

    Returns:
      `[D]` logits; NaN where a column of `x` has a NaN.

    Raises:
      ValueError: `x` is not 2-D, has no rows, has entries outside [0, 1] or infinite
        ones (when concrete), or `eps` is not in (0, 1/2).
    """
    if not 0.0 < float(eps) < 0.5:
        raise ValueError(f"`eps` must be in (0, 0.5), got {eps}.")
    check_rank(x, 2, "x", "[N, D]")
    if jnp.shape(x)[0] < 1:
        raise ValueError("`x` must have at least one row (example).")
    if is_concrete(x):
        arr = np.asarray(x)
        check_finite(arr[~np.isnan(arr)] if np.issubdtype(arr.dtype, np.inexact) else arr, "x")
        if np.any((arr < 0) | (arr > 1)):
            raise ValueError("`x` must lie in [0, 1] (Bernoulli data or probabilities).")
    mean = jnp.clip(jnp.mean(jnp.asarray(x, jnp.float32), axis=0), eps, 1.0 - eps)
    return jnp.log(mean) - jnp.log1p(-mean)


def _output_bias(model: object) -> nnx.Param:
    """The output-layer bias of the Bernoulli decoder of `model` (a VAE or a decoder)."""
    decoder = model.decoder if isinstance(model, VAE) else model
    # The two-layer VAE's decoder reads z1 through a wrapper.
    while isinstance(decoder, FirstLayerDecoder):
        decoder = decoder.decoder
    if not isinstance(decoder, BernoulliDecoder):
        raise TypeError(
            "`model` must be a VAE with a Bernoulli decoder (or that decoder) for a "
            f"mean-image output bias, got a {type(decoder).__name__} decoder."
        )
    net = decoder.net
    last = net.layers[-1] if isinstance(net, MLP) else None
    if not isinstance(last, nnx.Linear) or last.bias is None:
        raise TypeError(
            "`model`'s Bernoulli decoder must be an MLP whose output layer has a bias for a "
            f"mean-image output bias, got a {type(net).__name__}."
        )
    return last.bias


def init_decoder_bias(model: VAE | nnx.Module, x: Array, *, eps: float = DEFAULT_BIAS_EPS):
    """Sets the Bernoulli decoder's output bias to `mean_logits(x, eps)`, in place.

    Works for the one-layer VAE (`make_mlp_vae`, `iwae_paper_vae`), the two-layer one
    (`make_two_layer_vae`: the bias of p(x | z1)) and the binary-latent VAE
    (`make_binary_vae`), or for a `BernoulliDecoder` of an `MLP` itself.

    Args:
      model: a VAE (or decoder) as above; modified in place.
      x: training data in [0, 1], `[N, data_dim]`.
      eps: clip of the mean pixel, in (0, 1/2).

    Returns:
      `model`, for chaining.

    Raises:
      TypeError: the decoder is not a Bernoulli one over an MLP with an output bias
        (e.g. a Gaussian or convolutional decoder).
      ValueError: `x` is not `[N, data_dim]` data in [0, 1], or a bad `eps`.
    """
    bias_param = _output_bias(model)
    logits = mean_logits(x, eps)
    bias = bias_param.get_value()
    width = bias.shape[-1]
    if logits.shape[-1] != width:
        raise ValueError(
            f"`x` has {logits.shape[-1]} columns but the decoder outputs {width} (data_dim)."
        )
    if is_concrete(logits) and bool(jnp.any(jnp.isnan(logits))):
        raise ValueError("`x` has NaN entries: the mean image is undefined.")
    bias_param.set_value(logits.astype(bias.dtype))
    return model
