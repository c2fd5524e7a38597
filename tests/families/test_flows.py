"""Flow families: change of variables against an independent Jacobian, normalisation on a
grid, inverse of forward, STL / DReG zero-variance at q = target, transformations, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_helpers import random_params, randomise
from flax import nnx

from vi_jax import _prng
from vi_jax.estimators import gradients
from vi_jax.families import FLOW_FAMILIES, IAF, FlowDistribution, RealNVP, SplineFlow, make_family

D, C, B = 3, 2, 4


@functools.cache
def _family(name, latent_dim=D, context_dim=C):
    fam = make_family(name, latent_dim, flow_steps=2, flow_hidden=8, context_dim=context_dim)
    return randomise(fam, jax.random.key(FLOW_FAMILIES.index(name) + 10 * latent_dim))


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_log_prob_is_change_of_variables_with_jacfwd(name):
    fam = _family(name)
    params = random_params(jax.random.key(1), B, fam)
    q = fam(params)
    z, log_q = q.sample_and_log_prob(seed=jax.random.key(2), sample_shape=(3,))
    assert z.shape == (3, B, D) and log_q.shape == (3, B)
    # Independent check: eps -> z for one datum, its Jacobian by forward-mode autodiff.
    # The base noise the sampling pass drew (vi_jax._prng.normal, not jax.random.normal).
    eps = _prng.normal(jax.random.key(2), (3, B, D))
    loc, raw, ctx = params[:, :D], params[:, D : 2 * D], params[:, 2 * D :]
    scale = jax.nn.softplus(raw) + 1e-4

    def to_z(e, loc_b, scale_b, ctx_b):
        u, _ = fam.transform(e[None], ctx_b[None])
        return loc_b + scale_b * u[0]

    @jax.jit
    def expected(eps):  # [B, D] -> log q [B] and z [B, D], by jacfwd per datum
        jac = jax.vmap(jax.jacfwd(to_z))(eps, loc, scale, ctx)
        logq = jax.scipy.stats.norm.logpdf(eps).sum(-1) - jnp.linalg.slogdet(jac)[1]
        return logq, jax.vmap(to_z)(eps, loc, scale, ctx)

    want_logq, want_z = jax.lax.map(expected, eps)
    np.testing.assert_allclose(log_q, want_logq, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z, want_z, rtol=1e-5, atol=1e-5)
    # log_prob through the inverse agrees with the sampling pass.
    np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_inverse_of_forward_is_identity(name):
    fam = _family(name)
    eps = jax.random.normal(jax.random.key(3), (5, B, D))
    ctx = jax.random.normal(jax.random.key(4), (5, B, C))
    u, logdet = fam.transform(eps, ctx)
    back, logdet_back = fam.untransform(u, ctx)
    np.testing.assert_allclose(back, eps, atol=1e-4)
    np.testing.assert_allclose(logdet_back, logdet, atol=1e-4)
    assert float(jnp.max(jnp.abs(u - eps))) > 1e-2  # the flow is not the identity


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_density_integrates_to_one_on_a_grid(name):
    fam = _family(name, latent_dim=2, context_dim=0)
    q = fam(jnp.array([[0.2, -0.1, -0.5, -0.3]]))  # loc, raw scale (scale ~0.5)
    lin = jnp.linspace(-7.0, 7.0, 281)
    zz = jnp.stack(jnp.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 1, 2)
    mass = jnp.sum(jnp.exp(jax.jit(q.log_prob)(zz))) * (lin[1] - lin[0]) ** 2
    np.testing.assert_allclose(mass, 1.0, atol=5e-3)


def test_jit_vmap_grad_through_params_and_weights():
    fam = _family("iaf")
    graphdef, state = nnx.split(fam)
    params = random_params(jax.random.key(5), B, fam)

    @jax.jit
    def mean_log_q(state, params, key):
        q = nnx.merge(graphdef, state)(params)
        return jnp.mean(q.sample_and_log_prob(seed=key, sample_shape=(2,))[1])

    keys = jax.random.split(jax.random.key(6), 3)
    values = jax.vmap(mean_log_q, in_axes=(None, None, 0))(state, params, keys)
    assert values.shape == (3,) and bool(jnp.all(jnp.isfinite(values)))
    g_state, g_params = jax.grad(mean_log_q, argnums=(0, 1))(state, params, keys[0])
    norms = [float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(g_state)]
    assert all(np.isfinite(norms)) and sum(norms) > 0
    assert float(jnp.sum(jnp.abs(g_params))) > 0
    # A FlowDistribution is a pytree: it crosses a jit boundary.
    q = fam(params)
    out = jax.jit(lambda q, z: q.log_prob(z))(q, jnp.zeros((B, D)))
    np.testing.assert_allclose(out, q.log_prob(jnp.zeros((B, D))), rtol=1e-5, atol=1e-5)


def test_per_datum_weights_match_shared_ones():
    fam = _family("realnvp")
    params = random_params(jax.random.key(7), B, fam)
    net = fam.local_net(B)
    z = jax.random.normal(jax.random.key(8), (3, B, D))

    @jax.jit  # one compilation for both qs' log_prob and sampling passes
    def both(params, net, z, key):
        shared, local = fam(params), fam.local(params, net)
        return (
            local.log_prob(z),
            shared.log_prob(z),
            local.sample_and_log_prob(seed=key, sample_shape=(2,)),
            shared.sample_and_log_prob(seed=key, sample_shape=(2,)),
        )

    lp_local, lp_shared, (zs, lq), (z2, lq2) = both(params, net, z, jax.random.key(9))
    np.testing.assert_allclose(lp_local, lp_shared, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(zs, z2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lq, lq2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_stl_and_dreg_gradients_vanish_when_q_is_the_target(name):
    """STL / DReG: the phi-gradient is exactly zero at q = p(z | x) (it is built from the
    inverse flow's z-gradient); the pathwise gradient is not (so the test can fail)."""
    fam = _family(name)
    graphdef, state = nnx.split(fam)
    params = random_params(jax.random.key(10), B, fam)
    target = fam(params)  # log p(x, z) := log q(z), with q's parameters held fixed
    target = jax.tree.map(jax.lax.stop_gradient, target)

    def surrogate(estimator, state, params):
        q = nnx.merge(graphdef, state)(params)
        return jnp.sum(estimator(jax.random.key(11), target.log_prob, q, 3))

    names = ("elbo_stl", "iwae_dreg", "iwae_stl", "elbo_pathwise")

    @jax.jit  # one compilation for the four estimators (compile time dominates here)
    def all_grads(state, params):
        return {
            est: jax.grad(functools.partial(surrogate, getattr(gradients, est)), argnums=(0, 1))(
                state, params
            )
            for est in names
        }

    grads = {
        est: max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g))
        for est, g in all_grads(state, params).items()
    }
    # Zero up to float32 rounding of O(1) terms (the pathwise gradient is O(10)).
    assert grads["elbo_pathwise"] > 1.0, grads
    for est in ("elbo_stl", "iwae_dreg", "iwae_stl"):
        assert grads[est] < 1e-6 * grads["elbo_pathwise"] + 1e-6, (est, grads)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`num_steps`"):
        IAF(2, num_steps=0)
    with pytest.raises(ValueError, match=r"`hidden\[0\]`"):
        RealNVP(2, hidden=0)
    with pytest.raises(ValueError, match="`name`"):
        make_family("maf", 2)
    with pytest.raises(ValueError, match="`latent_dim`"):
        SplineFlow(1)
    with pytest.raises(ValueError, match="log-determinant is not finite"):
        IAF(2, forget_bias=float("-inf"))
    fam = _family("iaf")
    with pytest.raises(ValueError, match="`context`"):
        fam.distribution(jnp.zeros((B, D)), jnp.ones((B, D)), jnp.zeros((B, C + 1)))
    with pytest.raises(ValueError, match="`context`"):
        fam.distribution(jnp.zeros((B, D)), jnp.ones((B, D)))
    with pytest.raises(ValueError, match="`params`"):
        fam(jnp.zeros((B, fam.param_size + 1)))
    assert isinstance(
        fam.distribution(jnp.zeros((B, D)), jnp.ones((B, D)), jnp.zeros((B, C))), FlowDistribution
    )
