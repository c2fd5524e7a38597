"""Inverse autoregressive flow (Kingma et al. 2016) with MADE networks (Germain et al. 2015).

Each step t maps x to

    [m, s] = MADE_t(x; context),  sigma = sigmoid(s + forget_bias),
    y = sigma * x + (1 - sigma) * m,      log|det dy/dx| = sum log sigma,

the numerically stable, LSTM-like update of the paper: sigma in (0, 1) never
overflows, and log sigma = log_sigmoid is finite. m_i and s_i depend only on the
coordinates before i in step t's ordering, so the Jacobian is triangular; successive
steps reverse the ordering (the permutation between steps).

Sampling and log q of the samples cost one MADE pass per step. The inverse (log q of
an arbitrary z) is sequential: D sequential passes per step, x_k <- (y_k - (1 - sigma_k(x))
m_k(x)) / sigma_k(x), each of which fixes one more coordinate, so after D passes it is
exact (not an approximation) as a function of y, and so is its derivative. Pass k
updates only the coordinate of degree k, so no pass ever reads an unfinished guess.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax.families._base import DEFAULT_MIN_SCALE
from vi_jax.families._flow import FlowFamily
from vi_jax.types import Array


class MaskedLinear(nnx.Module):
    """A dense layer whose kernel is multiplied by a fixed MADE connectivity mask.

    Unit j of the output connects to unit i of the input iff `out_degrees[j] >=
    in_degrees[i]` (`strict`: `>`). Degrees are stored as tuples: the mask is a
    compile-time constant, not a parameter.
    """

    def __init__(
        self,
        in_degrees: tuple[int, ...],
        out_degrees: tuple[int, ...],
        *,
        strict: bool,
        rngs: nnx.Rngs,
        zero_init: bool = False,
    ) -> None:
        self.in_degrees, self.out_degrees, self.strict = in_degrees, out_degrees, strict
        shape = (len(in_degrees), len(out_degrees))
        init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((shape[1],)))

    def mask(self) -> np.ndarray:
        """The boolean connectivity mask `[in, out]` (a constant)."""
        din, dout = np.asarray(self.in_degrees)[:, None], np.asarray(self.out_degrees)[None, :]
        return (dout > din) if self.strict else (dout >= din)

    def __call__(self, x: Array) -> Array:
        """The masked dense map `[..., in] -> [..., out]`."""
        kernel = self.kernel[...] * jnp.asarray(self.mask(), x.dtype)
        return x @ kernel.astype(x.dtype) + self.bias[...].astype(x.dtype)


class MADE(nnx.Module):
    """Masked autoencoder: `(x [..., D], context [..., C]) -> (m, s)`, each `[..., D]`.

    Output i depends on the inputs whose degree (position in `order`) is below i's, and
    on the context (unmasked, added to the first hidden layer).
    """

    def __init__(
        self,
        order: tuple[int, ...],
        hidden: tuple[int, ...],
        context_dim: int,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        d = len(order)
        self.order = tuple(int(o) for o in order)
        # Hidden degrees cycle through 1..D-1; with D = 1 they are 0 (context only).
        degrees = [tuple(0 if d == 1 else (k % (d - 1)) + 1 for k in range(h)) for h in hidden]
        ins = [self.order, *degrees[:-1]]
        self.layers = nnx.List(
            [MaskedLinear(a, b, strict=False, rngs=rngs) for a, b in zip(ins, degrees, strict=True)]
        )
        self.context = (
            nnx.Linear(context_dim, hidden[0], use_bias=False, rngs=rngs) if context_dim else None
        )
        self.out = MaskedLinear(
            degrees[-1], self.order + self.order, strict=True, rngs=rngs, zero_init=True
        )

    def __call__(self, x: Array, context: Array | None) -> tuple[Array, Array]:
        """`(m, s)`, each `[..., D]`, for x `[..., D]` and context `[..., C]` (or None)."""
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and self.context is not None:
                if context is None:
                    raise ValueError("`context` is required: this network was built with one.")
                h = h + self.context(context.astype(x.dtype))
            h = jax.nn.elu(h)
        m, s = jnp.split(self.out(h), 2, axis=-1)
        return m, s


class IAF(FlowFamily):
    """Inverse autoregressive flow family: params `[*batch, 2 D + C]`.

    z = loc + scale * T(eps; context), T = IAF steps with MADE networks, orderings
    alternating natural / reversed. Cost: sampling with log q, one MADE pass per step;
    `log_prob(z)` of an arbitrary z (and hence the STL / DReG path-only log q, which
    differentiates it in z), D sequential MADE passes per step.
    """

    name = "iaf"

    def __init__(
        self,
        latent_dim: int,
        *,
        num_steps: int = 2,
        hidden: int | tuple[int, ...] = 64,
        context_dim: int = 0,
        forget_bias: float = 1.0,
        min_scale: float = DEFAULT_MIN_SCALE,
        rngs: nnx.Rngs | int = 0,
    ) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 1.
          num_steps: IAF steps >= 1.
          hidden: MADE hidden width(s), each >= 1.
          context_dim: C >= 0, width of the encoder's context (0: no context).
          forget_bias: added to s before the sigmoid (sigma starts near sigmoid(1) = 0.73).
          min_scale: floor of the final scale.
          rngs: `nnx.Rngs` or int seed.
        """
        super().__init__(
            latent_dim,
            num_steps=num_steps,
            hidden=hidden,
            context_dim=context_dim,
            min_scale=min_scale,
        )
        rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
        self.forget_bias = float(forget_bias)
        natural = tuple(range(1, self.latent_dim + 1))
        self.steps = nnx.List(
            [
                MADE(
                    natural if i % 2 == 0 else natural[::-1],
                    self.hidden,
                    self.context_dim,
                    rngs=rngs,
                )
                for i in range(self.num_steps)
            ]
        )
        self._check_construction()

    def _gate(self, i: int, x: Array, ctx: Array | None) -> tuple[Array, Array]:
        m, s = self.steps[i](x, ctx)
        return m, s + jnp.asarray(self.forget_bias, x.dtype)

    def _step_forward(self, i: int, x: Array, ctx: Array | None) -> tuple[Array, Array]:
        m, g = self._gate(i, x, ctx)
        sigma = jax.nn.sigmoid(g)
        return sigma * x + (1 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(g), -1)

    def _step_inverse(self, i: int, y: Array, ctx: Array | None) -> tuple[Array, Array]:
        order = jnp.asarray(self.steps[i].order)

        def body(k: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
            x, _ = carry
            m, g = self._gate(i, x, ctx)
            sigma = jax.nn.sigmoid(g)
            # Only the coordinate of degree k + 1 is set: its inputs (degrees <= k) are
            # already exact, and the others stay 0, never an overflowing guess.
            new = (y - (1 - sigma) * m) / sigma
            return jnp.where(order == k + 1, new, x), jnp.sum(jax.nn.log_sigmoid(g), -1)

        # After pass k the coordinates of degree <= k are exact; the gates of the last
        # pass read only degrees < D, so its log-determinant is exact too.
        init = (jnp.zeros_like(y), jnp.zeros(y.shape[:-1], y.dtype))
        return jax.lax.fori_loop(0, self.latent_dim, body, init)
