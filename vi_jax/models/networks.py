"""Neural networks for encoders and decoders: an MLP and a small convolutional pair.

Every network maps `[*lead, in_features] -> [*lead, out_features]` for any number of
leading dimensions, so one decoder serves a batch `[B, D]` and importance samples
`[K, B, D]` alike. The convolutional networks take and give flat vectors
(`H * W * C` features) so that images and vectors share the same data layout.

Internally every network folds the leading dimensions into one (`[prod(lead), in]`,
a free reshape of a row-major array) before its first layer and unfolds them after its
last (`flatten_leading` / `unflatten_leading`): on XLA's CPU backend a dense layer on a
rank-3 activation `[K, B, in]`, and above all its weight gradient (a contraction over two
axes), runs about 10% slower than the same layer on the rank-2 `[K * B, in]` (measured in
`benchmarks/throughput_numpyro.py`), and every estimator hands decoders `[K, B, latent]`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vi_jax.types import Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
}
"""Activation functions by name (the names accepted by every `activation` argument)."""


def get_activation(name: str) -> Callable[[Array], Array]:
    """Returns the activation function called `name` (a key of `ACTIVATIONS`).

    Raises:
      ValueError: if `name` is not a known activation.
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]


def as_rngs(rngs: nnx.Rngs | int | Array) -> nnx.Rngs:
    """Accepts an `nnx.Rngs`, an int seed or a PRNG key; returns an `nnx.Rngs`."""
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, numbers.Integral) and not isinstance(rngs, bool):
        return nnx.Rngs(int(rngs))
    if isinstance(rngs, jax.Array):
        return nnx.Rngs(rngs)
    raise TypeError(
        f"`rngs` must be an nnx.Rngs, an int seed or a PRNG key, got {type(rngs).__name__}."
    )


def check_width(value: object, name: str) -> int:
    """Returns `value` as an int layer width, or raises if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}: {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def check_widths(values: object, name: str) -> tuple[int, ...]:
    """Returns a sequence of layer widths as a tuple of ints >= 1 (may be empty)."""
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(
            f"`{name}` must be a sequence of ints (layer widths), got {type(values).__name__}."
        )
    return tuple(check_width(v, f"{name}[{i}]") for i, v in enumerate(values))


def check_image_shape(image_shape: object) -> tuple[int, int, int]:
    """Returns `(height, width, channels)` as ints >= 1, or raises."""
    if not isinstance(image_shape, Sequence) or len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (height, width, channels), got {image_shape!r}.")
    h, w, c = (check_width(v, "image_shape") for v in image_shape)
    return h, w, c


def flatten_leading(x: Array) -> tuple[Array, tuple[int, ...]]:
    """Folds all leading dimensions into one: `[*lead, d] -> ([prod(lead), d], lead)`.

    A reshape, free for a row-major array (no copy); `unflatten_leading` undoes it.
    Zero leading dimensions give `[1, d]`, so a network always sees a rank-2 matrix.
    """
    lead = tuple(jnp.shape(x)[:-1])
    return jnp.reshape(x, (math.prod(lead), jnp.shape(x)[-1])), lead


def unflatten_leading(y: Array, lead: tuple[int, ...]) -> Array:
    """Restores the leading dimensions: `[prod(lead), *rest] -> [*lead, *rest]`."""
    return jnp.reshape(y, (*lead, *jnp.shape(y)[1:]))


def _check_last_dim(x: Array, size: int, name: str) -> None:
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != size:
        raise ValueError(f"`{name}` must have shape [..., {size}], got {jnp.shape(x)}.")


class MLP(nnx.Module):
    """Multi-layer perceptron `[*lead, in_features] -> [*lead, out_features]`.

    Dense layers of widths `hidden` with `activation` after each; the output layer is
    linear (no activation), so it can produce logits, means or raw scales.

    Attributes:
      in_features: input width.
      out_features: output width.
      activation: name of the hidden activation (a key of `ACTIVATIONS`).
      layers: the `nnx.Linear` layers, hidden first.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        rngs: nnx.Rngs | int,
    ) -> None:
        """Builds the layers.

        Args:
          in_features: input width >= 1.
          hidden: hidden widths, each >= 1 (empty: a single linear layer).
          out_features: output width >= 1.
          activation: hidden activation name: relu, tanh, gelu, softplus, elu or silu.
          rngs: `nnx.Rngs` (or an int seed) for the weight initialisers.
        """
        self.in_features = check_width(in_features, "in_features")
        self.out_features = check_width(out_features, "out_features")
        hidden = check_widths(hidden, "hidden")
        get_activation(activation)
        self.activation = activation
        rngs = as_rngs(rngs)
        widths = (self.in_features, *hidden, self.out_features)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )

    def __call__(self, x: Array) -> Array:
        """Applies the network: `x [*lead, in_features] -> [*lead, out_features]`."""
        _check_last_dim(x, self.in_features, "x")
        act = ACTIVATIONS[self.activation]
        h, lead = flatten_leading(x)
        for layer in self.layers[:-1]:
            h = act(layer(h))
        return unflatten_leading(self.layers[-1](h), lead)


class ConvEncoderNet(nnx.Module):
    """Convolutional trunk `[*lead, H*W*C] -> [*lead, out_features]` for small images.

    Strided convolutions (stride 2, 'SAME' padding, one per entry of `channels`, each
    followed by the activation), flatten, an optional dense hidden layer with the
    activation, then a linear output layer. For 28x28x1 and `channels=(32, 64)`:
    28x28x1 -> 14x14x32 -> 7x7x64 -> 3136 -> [hidden] -> out_features.

    Attributes:
      image_shape: (H, W, C) of the input images.
      in_features: H * W * C.
      out_features: output width.
    """

    def __init__(
        self,
        out_features: int,
        *,
        image_shape: Sequence[int] = (28, 28, 1),
        channels: Sequence[int] = (32, 64),
        hidden: int | None = None,
        kernel_size: int = 3,
        activation: str = "relu",
        rngs: nnx.Rngs | int,
    ) -> None:
        """Builds the layers.

        Args:
          out_features: output width >= 1 (e.g. 2 * latent for a Gaussian encoder).
          image_shape: (height, width, channels) of the images.
          channels: output channels of each stride-2 convolution (at least one).
          hidden: width of a dense hidden layer after flattening, or None for none.
          kernel_size: square kernel size of the convolutions.
          activation: activation name (see `ACTIVATIONS`).
          rngs: `nnx.Rngs` (or an int seed).
        """
        self.image_shape = check_image_shape(image_shape)
        self.in_features = math.prod(self.image_shape)
        self.out_features = check_width(out_features, "out_features")
        channels = check_widths(channels, "channels")
        if not channels:
            raise ValueError("`channels` must list at least one convolution.")
        kernel_size = check_width(kernel_size, "kernel_size")
        get_activation(activation)
        self.activation = activation
        rngs = as_rngs(rngs)
        h, w, c = self.image_shape
        convs = []
        for out_c in channels:
            convs.append(nnx.Conv(c, out_c, (kernel_size, kernel_size), strides=2, rngs=rngs))
            h, w, c = -(-h // 2), -(-w // 2), out_c  # 'SAME' stride 2: ceil(size / 2)
        self.convs = nnx.List(convs)
        flat = h * w * c
        if hidden is None:
            self.hidden = None
            self.out = nnx.Linear(flat, self.out_features, rngs=rngs)
        else:
            hidden = check_width(hidden, "hidden")
            self.hidden = nnx.Linear(flat, hidden, rngs=rngs)
            self.out = nnx.Linear(hidden, self.out_features, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        """Applies the trunk: `x [*lead, H*W*C] -> [*lead, out_features]`."""
        _check_last_dim(x, self.in_features, "x")
        act = ACTIVATIONS[self.activation]
        h, lead = flatten_leading(x)
        n = h.shape[0]
        h = jnp.reshape(h, (n, *self.image_shape))
        for conv in self.convs:
            h = act(conv(h))
        h = jnp.reshape(h, (n, -1))
        if self.hidden is not None:
            h = act(self.hidden(h))
        return unflatten_leading(self.out(h), lead)


class ConvDecoderNet(nnx.Module):
    """Transposed-convolution decoder `[*lead, in_features] -> [*lead, H*W*C]`.

    An optional dense hidden layer, a dense layer to a `(H / 2^n, W / 2^n, channels[0])`
    feature map, then n = `len(channels)` stride-2 transposed convolutions: through
    `channels[1:]` (each with the activation) and finally to C channels with no
    activation (raw outputs: logits or means). For 28x28x1 and `channels=(64, 32)`:
    in -> 7x7x64 -> 14x14x32 -> 28x28x1 -> 784.

    Attributes:
      image_shape: (H, W, C) of the output images.
      in_features: input width.
      out_features: H * W * C.
    """

    def __init__(
        self,
        in_features: int,
        *,
        image_shape: Sequence[int] = (28, 28, 1),
        channels: Sequence[int] = (64, 32),
        hidden: int | None = None,
        kernel_size: int = 3,
        activation: str = "relu",
        rngs: nnx.Rngs | int,
    ) -> None:
        """Builds the layers.

        Args:
          in_features: input (latent) width >= 1.
          image_shape: (height, width, channels); height and width must be divisible
            by `2 ** len(channels)`.
          channels: feature-map channels before each stride-2 transposed convolution.
          hidden: width of a dense hidden layer before the feature map, or None.
          kernel_size: square kernel size of the transposed convolutions.
          activation: activation name (see `ACTIVATIONS`).
          rngs: `nnx.Rngs` (or an int seed).
        """
        self.in_features = check_width(in_features, "in_features")
        self.image_shape = check_image_shape(image_shape)
        self.out_features = math.prod(self.image_shape)
        channels = check_widths(channels, "channels")
        if not channels:
            raise ValueError("`channels` must list at least one transposed convolution.")
        kernel_size = check_width(kernel_size, "kernel_size")
        get_activation(activation)
        self.activation = activation
        rngs = as_rngs(rngs)
        h, w, c = self.image_shape
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise ValueError(
                f"`image_shape` height and width must be divisible by 2 ** len(channels) = "
                f"{factor}, got {self.image_shape}."
            )
        self.base_shape = (h // factor, w // factor, channels[0])
        width = self.in_features
        if hidden is None:
            self.hidden = None
        else:
            hidden = check_width(hidden, "hidden")
            self.hidden = nnx.Linear(width, hidden, rngs=rngs)
            width = hidden
        self.project = nnx.Linear(width, math.prod(self.base_shape), rngs=rngs)
        outs = (*channels[1:], c)
        kernel = (kernel_size, kernel_size)
        self.deconvs = nnx.List(
            [
                nnx.ConvTranspose(a, b, kernel, strides=2, rngs=rngs)
                for a, b in zip(channels, outs, strict=True)
            ]
        )

    def __call__(self, z: Array) -> Array:
        """Applies the decoder: `z [*lead, in_features] -> [*lead, H*W*C]` (no output act)."""
        _check_last_dim(z, self.in_features, "z")
        act = ACTIVATIONS[self.activation]
        h, lead = flatten_leading(z)
        n = h.shape[0]
        if self.hidden is not None:
            h = act(self.hidden(h))
        h = act(self.project(h))
        h = jnp.reshape(h, (n, *self.base_shape))
        for deconv in self.deconvs[:-1]:
            h = act(deconv(h))
        h = self.deconvs[-1](h)
        return unflatten_leading(jnp.reshape(h, (n, self.out_features)), lead)
