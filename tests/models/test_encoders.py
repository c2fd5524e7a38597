import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.models import MLP, GaussianEncoder, inverse_softplus_scale, softplus_scale
from vi_jax.models.functional import merge_params, split_params


@pytest.fixture(scope="module")
def encoder():
    return GaussianEncoder.mlp(64, [16], 2, activation="tanh", rngs=nnx.Rngs(0))


def test_posterior_shapes(encoder):
    x = jnp.ones((5, 64))
    q = encoder(x)
    assert isinstance(q, distrax.MultivariateNormalDiag)
    assert q.batch_shape == (5,) and q.event_shape == (2,)
    assert encoder(jnp.ones((3, 5, 64))).batch_shape == (3, 5)
    loc, scale = encoder.loc_scale(x)
    assert loc.shape == scale.shape == (5, 2)
    np.testing.assert_allclose(q.mean(), loc)
    np.testing.assert_allclose(q.stddev(), scale, rtol=1e-6)
    q2, loc2, scale2 = encoder.distribution_and_params(x)
    np.testing.assert_allclose(q2.log_prob(loc), q.log_prob(loc), rtol=1e-6)
    np.testing.assert_allclose(loc2, loc)
    np.testing.assert_allclose(scale2, scale)


def test_softplus_scale_is_positive_for_extreme_inputs():
    raw = jnp.array([-1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30], jnp.float32)
    s = softplus_scale(raw, 1e-4)
    assert bool(jnp.all(jnp.isfinite(s)))
    assert bool(jnp.all(s >= 1e-4))
    np.testing.assert_allclose(s[0], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(s[-2], 1e4, rtol=1e-6)
    g = jax.grad(lambda r: jnp.sum(jnp.log(softplus_scale(r, 1e-4))))(raw)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_encoder_scale_positive_for_huge_weights(encoder):
    graphdef, params, rest = split_params(encoder)
    huge = jax.tree.map(lambda p: 1e4 * jnp.sign(p) + p, params)
    enc = merge_params(graphdef, huge, rest)
    x = jnp.asarray(np.random.default_rng(1).random((6, 64)) < 0.5, jnp.float32)
    loc, scale = enc.loc_scale(x)
    assert bool(jnp.all(scale > 0))
    assert bool(jnp.all(jnp.isfinite(enc(x).log_prob(loc))))
    neg = jax.tree.map(lambda p: -1e4 * jnp.ones_like(p), params)
    _, scale = merge_params(graphdef, neg, rest).loc_scale(x)
    assert bool(jnp.all(scale >= encoder.min_scale))


@pytest.mark.parametrize("target", [1e-3, 0.5, 1.0, 30.0])
def test_inverse_softplus_scale_round_trip(target):
    raw = inverse_softplus_scale(target, 1e-4)
    np.testing.assert_allclose(softplus_scale(jnp.asarray(raw), 1e-4), target, rtol=1e-5)


def test_jit_vmap_grad(encoder):
    graphdef, params, rest = split_params(encoder)
    x = jnp.asarray(np.random.default_rng(2).random((4, 64)) < 0.5, jnp.float32)
    z = jnp.ones((4, 2))

    def f(params, x, z):
        return merge_params(graphdef, params, rest)(x).log_prob(z)

    eager = f(params, x, z)
    np.testing.assert_allclose(jax.jit(f)(params, x, z), eager, rtol=1e-5)
    per = jax.jit(jax.vmap(f, in_axes=(None, 0, 0)))(params, x, z)
    np.testing.assert_allclose(per, eager, rtol=1e-5)

    def g(p, key):
        q = merge_params(graphdef, p, rest)(x)
        # log q(z) at fixed z, and a reparameterised sample, both differentiated
        return jnp.sum(q.log_prob(z)) + jnp.sum(q.sample(seed=key))

    grads = jax.jit(jax.grad(g))(params, jax.random.key(0))
    for leaf in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(leaf))) and bool(jnp.any(leaf != 0))


def test_refusals():
    net = MLP(16, [], 4, rngs=0)
    with pytest.raises(ValueError, match="`latent_dim`"):
        GaussianEncoder(net, 0)
    with pytest.raises(ValueError, match="2 \\* latent_dim"):
        GaussianEncoder(net, 3)
    with pytest.raises(ValueError, match="`min_scale`"):
        GaussianEncoder(net, 2, min_scale=0.0)
    with pytest.raises(ValueError, match="`latent_dim`"):
        GaussianEncoder.mlp(64, [16], 0, rngs=0)
    with pytest.raises(TypeError, match="`net`"):
        GaussianEncoder(lambda x: x, 2)
    with pytest.raises(ValueError, match="`scale`"):
        inverse_softplus_scale(1e-5, 1e-4)


@pytest.mark.parametrize("posterior", ["fullrank", "lowrank"])
def test_coupled_family_encoder_starts_near_a_diagonal_gaussian(posterior):
    from vi_jax.families import COUPLING_INIT_GAIN
    from vi_jax.models import FamilyEncoder

    d, x = 4, jnp.linspace(0.0, 1.0, 2 * 6).reshape(2, 6)
    enc = FamilyEncoder.mlp(6, (8,), d, posterior, rngs=0)
    plain = MLP(6, (8,), enc.family.param_size, rngs=0)  # the same draws, no gain
    got, ref = np.asarray(enc.params(x)), np.asarray(plain(x))
    np.testing.assert_allclose(got[:, : 2 * d], ref[:, : 2 * d], rtol=1e-6)
    np.testing.assert_allclose(got[:, 2 * d :], COUPLING_INIT_GAIN * ref[:, 2 * d :], rtol=1e-5)
    assert np.all(enc.family.output_gain()[: 2 * d] == 1.0)
