"""Normalising-flow families: z = loc + scale * T(eps; context), eps ~ N(0, I).

`T` is a stack of invertible steps (IAF, affine coupling, spline coupling) whose
networks are NNX modules conditioned on a per-datum context vector. A flow family
`family(params)` reads params `[*batch, 2 D + C]` = (loc, raw scale, context) and
returns a `FlowDistribution`; with identity steps it is exactly the diagonal Gaussian,
so every flow contains the mean-field family.

log q(z) = log N(eps) - log|det dT/deps| - sum log scale, computed in the sampling pass
(`sample_and_log_prob`: one forward pass); `log_prob(z)` of an arbitrary z needs the
inverse of T (one pass for coupling steps, `D` sequential passes for IAF steps).
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax import _prng
from vi_jax.families._base import (
    DEFAULT_MIN_SCALE,
    Family,
    broadcast_batched,
    check_count,
    check_event,
    check_hidden,
    check_params,
    inverse_positive,
    positive,
    std_normal_log_prob,
)
from vi_jax.types import Array, PyTree


class FlowDistribution(distrax.Distribution):
    """q(z) = loc + scale * T(eps; context) with eps ~ N(0, I): batch `[*batch]`, event `[D]`.

    The flow's module is held as `(graphdef, state)` (a pure pytree, so q passes
    through jit / vmap / grad like any distrax distribution). With `per_datum=True`
    every leaf of `state` has a leading `[B]` axis (batch `[B]` only): datum b uses
    its own network weights (per-datapoint SVI of a flow).
    """

    def __init__(
        self,
        loc: Array,
        scale: Array,
        context: Array | None,
        graphdef: nnx.GraphDef,
        state: PyTree,
        *,
        per_datum: bool = False,
        params: Array | None = None,
    ) -> None:
        """Builds it.

        Args:
          loc: `[*batch, D]`.
          scale: positive `[*batch, D]`.
          context: `[*batch, C]` or None.
          graphdef: `nnx.split(flow_family)[0]`.
          state: the family's weights (`nnx.split(flow_family)[1]`), batched if `per_datum`.
          per_datum: whether `state` has a leading `[B]` axis.
          params: the raw per-datum params this q came from (kept for warm starts).
        """
        super().__init__()
        self.loc = jnp.asarray(loc)
        self.scale = jnp.broadcast_to(jnp.asarray(scale, self.loc.dtype), self.loc.shape)
        self.context = context
        self.graphdef = graphdef
        self.state = state
        self.per_datum = bool(per_datum)
        self.params = params
        if self.per_datum and self.loc.ndim != 2:
            raise ValueError(
                f"a per-datum flow needs batch [B] (loc [B, D]), got loc {self.loc.shape}."
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The event shape `(D,)`."""
        return self.loc.shape[-1:]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch shape `[*batch]`."""
        return self.loc.shape[:-1]

    @property
    def dtype(self):  # noqa: ANN201
        return self.loc.dtype

    def _apply(self, method: str, x: Array) -> tuple[Array, Array]:
        """`method` ("transform" or "untransform") of the flow on x `[*s, *batch, D]`."""
        graphdef = self.graphdef

        def run(state: PyTree, xx: Array, ctx: Array | None) -> tuple[Array, Array]:
            return getattr(nnx.merge(graphdef, state), method)(xx, ctx)

        lead = x.shape[:-1]
        if not self.per_datum:
            ctx = None
            if self.context is not None:
                ctx = jnp.broadcast_to(self.context, (*lead, self.context.shape[-1]))
            return run(self.state, x, ctx)
        batch = self.loc.shape[0]
        flat = x.reshape(-1, batch, x.shape[-1])

        def one(state: PyTree, xb: Array, cb: Array | None) -> tuple[Array, Array]:
            cb = None if cb is None else jnp.broadcast_to(cb, (xb.shape[0], cb.shape[-1]))
            return run(state, xb, cb)

        y, logdet = jax.vmap(one, in_axes=(0, 1, 0), out_axes=(1, 1))(
            self.state, flat, self.context
        )
        return y.reshape(x.shape), logdet.reshape(lead)

    def _sample_n_and_log_prob(self, key: Array, n: int) -> tuple[Array, Array]:
        eps = _prng.normal(key, (n, *self.loc.shape), self.loc.dtype)
        u, logdet = self._apply("transform", eps)
        z = self.loc + self.scale * u
        log_q = std_normal_log_prob(eps) - logdet - jnp.sum(jnp.log(self.scale), -1)
        return z, log_q

    def _sample_n(self, key: Array, n: int) -> Array:
        return self._sample_n_and_log_prob(key, n)[0]

    def mean(self, num_draws: int = 128) -> Array:
        """E_q[z] `[*batch, D]`, estimated (no closed form for a flow).

        The average over `num_draws` fixed antithetic pairs of base draws (key 0), so it
        is deterministic; its Monte Carlo error is O(1 / sqrt(2 num_draws)) of q's spread.
        """
        eps = jax.random.normal(jax.random.key(0), (num_draws, *self.loc.shape), self.loc.dtype)
        u, _ = self._apply("transform", jnp.concatenate([eps, -eps], 0))
        return self.loc + self.scale * jnp.mean(u, axis=0)

    def log_prob(self, value: Array) -> Array:
        """Log q(z) for z `[*s, *batch, D]` -> `[*s, *batch]`, through the inverse flow."""
        u = (jnp.asarray(value) - self.loc) / self.scale
        eps, logdet = self._apply("untransform", u)
        return std_normal_log_prob(eps) - logdet - jnp.sum(jnp.log(self.scale), -1)


class FlowFamily(Family):
    """Base of the flow families: params `[*batch, 2 D + C]` = (loc, raw scale, context).

    Subclasses build `self.steps` and implement `_step_forward(i, x, ctx)` and
    `_step_inverse(i, y, ctx)`, each returning `(output, log|det d forward|)`.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        num_steps: int,
        hidden: int | tuple[int, ...],
        context_dim: int = 0,
        min_scale: float = DEFAULT_MIN_SCALE,
    ) -> None:
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.num_steps = check_count(num_steps, "num_steps")
        self.hidden = check_hidden(hidden, "hidden")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"`context_dim` must be an int >= 0, got {context_dim!r}.")
        self.context_dim = int(context_dim)
        self.min_scale = float(min_scale)
        self.param_size = 2 * self.latent_dim + self.context_dim

    # ---------------------------------------------------------------- the transform

    def _step_forward(self, i: int, x: Array, ctx: Array | None) -> tuple[Array, Array]:
        raise NotImplementedError

    def _step_inverse(self, i: int, y: Array, ctx: Array | None) -> tuple[Array, Array]:
        raise NotImplementedError

    def transform(self, eps: Array, context: Array | None = None) -> tuple[Array, Array]:
        """`(u, log|det du/deps|)`: u `[..., D]`, log-det `[...]`; context `[..., C]`."""
        logdet = jnp.zeros(eps.shape[:-1], eps.dtype)
        x = eps
        for i in range(self.num_steps):
            x, ld = self._step_forward(i, x, context)
            logdet = logdet + ld
        return x, logdet

    def untransform(self, u: Array, context: Array | None = None) -> tuple[Array, Array]:
        """`(eps, log|det du/deps|)` with `transform(eps) = u` (the forward log-det)."""
        logdet = jnp.zeros(u.shape[:-1], u.dtype)
        x = u
        for i in reversed(range(self.num_steps)):
            x, ld = self._step_inverse(i, x, context)
            logdet = logdet + ld
        return x, logdet

    def _check_construction(self) -> None:
        """Raises if the freshly built flow's log-determinant is not finite."""
        eps = jnp.linspace(-2.0, 2.0, 3 * self.latent_dim).reshape(3, self.latent_dim)
        ctx = jnp.zeros((3, self.context_dim)) if self.context_dim else None
        u, logdet = self.transform(eps, ctx)
        if not (np.all(np.isfinite(np.asarray(logdet))) and np.all(np.isfinite(np.asarray(u)))):
            raise ValueError(
                f"the {self.name} flow's log-determinant is not finite at construction "
                f"(got {np.asarray(logdet)}); check its arguments (`num_steps`, `hidden`, "
                "and the flow's scale settings)."
            )

    # ---------------------------------------------------------------- distributions

    def _split(self, params: Array) -> tuple[Array, Array, Array | None]:
        params = check_params(params, self.param_size, self.name)
        d = self.latent_dim
        loc, raw = params[..., :d], params[..., d : 2 * d]
        ctx = params[..., 2 * d :] if self.context_dim else None
        return loc, positive(raw, self.min_scale), ctx

    def _check_context(self, context: Array | None, batch: tuple[int, ...]) -> Array | None:
        if self.context_dim == 0:
            if context is not None:
                raise ValueError(f"`context` given, but this {self.name} flow has context_dim = 0.")
            return None
        if context is None:
            raise ValueError(f"`context` [*batch, {self.context_dim}] is required.")
        context = jnp.asarray(context)
        if context.shape[-1:] != (self.context_dim,) or context.shape[:-1] != batch:
            raise ValueError(
                f"`context` must have shape [*batch, context_dim] = "
                f"{(*batch, self.context_dim)}, got {context.shape}."
            )
        return context

    def distribution(
        self, loc: Array, scale: Array, context: Array | None = None
    ) -> FlowDistribution:
        """q(z) = loc + scale * T(eps; context): loc, scale `[*batch, D]`, context `[*batch, C]`."""
        loc = check_event(loc, self.latent_dim, "loc")
        context = self._check_context(context, loc.shape[:-1])
        graphdef, state = nnx.split(self)
        return FlowDistribution(loc, scale, context, graphdef, state)

    def __call__(self, params: Array) -> FlowDistribution:
        """Q for `params [*batch, 2 D + C]`: batch `[*batch]`, event `[D]`."""
        loc, scale, ctx = self._split(params)
        graphdef, state = nnx.split(self)
        return FlowDistribution(loc, scale, ctx, graphdef, state, params=params)

    def local(self, params: Array, net: PyTree) -> FlowDistribution:
        """Q whose datum b uses weights `net[b]` (leaves `[B, ...]`); params `[B, P]`."""
        loc, scale, ctx = self._split(params)
        graphdef, _ = nnx.split(self)
        return FlowDistribution(loc, scale, ctx, graphdef, net, per_datum=True, params=params)

    def init_params(self, loc: Array, scale: Array) -> Array:
        """`[B, 2 D + C]`: base N(loc, diag(scale^2)), zero context."""
        ctx = jnp.zeros((*loc.shape[:-1], self.context_dim), loc.dtype)
        return jnp.concatenate([loc, inverse_positive(scale, self.min_scale), ctx], -1)

    def params_of(self, q: distrax.Distribution) -> Array:
        """The params of a `FlowDistribution` made by a family (or of a diagonal Gaussian)."""
        if isinstance(q, distrax.MultivariateNormalDiag):
            scale = jnp.broadcast_to(q.scale_diag, q.loc.shape)
            return self.init_params(q.loc, jnp.maximum(scale, 2 * self.min_scale))
        if not isinstance(q, FlowDistribution) or q.params is None:
            raise TypeError(
                f"`q` must be a FlowDistribution made from params, got {type(q).__name__}."
            )
        return q.params

    def net_state(self) -> PyTree:
        """The flow's weights (an `nnx.State`)."""
        return nnx.split(self)[1]

    def net_of(self, q: distrax.Distribution) -> PyTree:
        """The weights inside a `FlowDistribution` (this family's own for a Gaussian q)."""
        return q.state if isinstance(q, FlowDistribution) else self.net_state()

    def local_net(self, batch: int, q: distrax.Distribution | None = None) -> PyTree:
        """Weights for `local`: those of `q` (or this family's) repeated `batch` times."""
        net = self.net_state() if q is None else self.net_of(q)
        if isinstance(q, FlowDistribution) and q.per_datum:
            return net
        return broadcast_batched(net, check_count(batch, "batch"))


class ContextMLP(nnx.Module):
    """`(x [..., D_in], context [..., C] | None) -> [..., out]`: an MLP on [x, context].

    The last layer starts at zero, so a coupling step built on it starts at (near)
    the identity.
    """

    def __init__(
        self,
        in_features: int,
        context_dim: int,
        hidden: tuple[int, ...],
        out_features: int,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        widths = (in_features + context_dim, *hidden)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = nnx.Linear(
            widths[-1], out_features, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )
        self.context_dim = context_dim

    def __call__(self, x: Array, context: Array | None) -> Array:
        h = x if context is None else jnp.concatenate([x, context], -1)
        for layer in self.layers:
            h = jax.nn.elu(layer(h))
        return self.out(h)
