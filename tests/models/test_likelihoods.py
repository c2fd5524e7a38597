import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.estimators import is_reparameterized
from vi_jax.models import (
    MLP,
    BernoulliDecoder,
    GaussianDecoder,
    LogitBernoulli,
    bernoulli_likelihood,
    bernoulli_row_log_prob,
    gaussian_likelihood,
)
from vi_jax.models.functional import merge_params, split_params


def _bce(x, logits):
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)


def test_bernoulli_float_binary_and_grey_inputs():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 4, 6)) * 3, jnp.float32)
    x_bin = jnp.asarray(rng.random((4, 6)) < 0.5, jnp.float32)
    x_grey = jnp.asarray(rng.random((4, 6)), jnp.float32)
    p = bernoulli_likelihood(logits)
    assert p.batch_shape == (3, 4) and p.event_shape == (6,)
    for x in (x_bin, x_grey):
        lp = p.log_prob(x)  # x [B, d] broadcast against [K, B, d]
        assert lp.shape == (3, 4)
        np.testing.assert_allclose(lp, _bce(x, logits), rtol=1e-5)
    np.testing.assert_allclose(p.mean(), jax.nn.sigmoid(logits), rtol=1e-6)


def test_bernoulli_is_normalised_and_extreme_logits_finite():
    logits = jnp.array([-2.0, 0.3, 4.0])
    p = bernoulli_likelihood(logits)
    xs = jnp.array(list(itertools.product([0.0, 1.0], repeat=3)))
    np.testing.assert_allclose(jnp.sum(jnp.exp(p.log_prob(xs))), 1.0, rtol=1e-6)
    q = bernoulli_likelihood(jnp.array([-1e4, 1e4]))
    assert bool(jnp.all(jnp.isfinite(q.log_prob(jnp.array([0.0, 1.0])))))


def test_logit_bernoulli_equals_distrax_bernoulli():
    logits = jnp.array([-1e4, -30.0, -2.0, 0.0, 0.7, 30.0, 1e4], jnp.float32)
    ours = jax.jit(jax.value_and_grad(lambda lg, x: jnp.sum(LogitBernoulli(logits=lg).log_prob(x))))
    ref = jax.jit(
        jax.value_and_grad(lambda lg, x: jnp.sum(distrax.Bernoulli(logits=lg).log_prob(x)))
    )
    for x in (jnp.zeros_like(logits), jnp.ones_like(logits), jnp.full_like(logits, 0.3)):
        (v1, g1), (v2, g2) = ours(logits, x), ref(logits, x)
        np.testing.assert_allclose(v1, v2, rtol=1e-6)
        np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-7)
    d = bernoulli_likelihood(logits)
    assert isinstance(d.distribution, distrax.Bernoulli)
    assert not is_reparameterized(d)
    assert d.sample(seed=jax.random.key(0)).shape == (7,)


def test_logit_bernoulli_derivatives_and_nan_contract():
    # The log-prob's softplus has a hand-written JVP (it reuses exp(-|l|)): first and
    # second derivatives, forward mode, vmap, and the NaN / out-of-support contract, all
    # in one compiled program (compilation dominates this test's cost).
    logits = jnp.array(
        [-jnp.inf, -1e4, -30.0, -2.0, 0.0, 0.7, 30.0, 1e4, jnp.inf, jnp.nan], jnp.float32
    )
    x = jnp.array([0.3] * 9 + [1.0], jnp.float32)
    x_odd = jnp.array([jnp.nan, -0.5, 1.5, 1.0])

    def lp(lg, xx):
        return jnp.sum(LogitBernoulli(logits=lg).log_prob(xx))

    @jax.jit
    def probe(lg, xx, x_odd):
        grad = jax.grad(lp)(lg, xx)
        hess = jax.vmap(jax.grad(jax.grad(lambda a, v: lp(a[None], v[None]))))(lg, xx)
        _, tangent = jax.jvp(lambda a: lp(a[:-1], xx[:-1]), (lg,), (jnp.ones_like(lg),))
        odd = LogitBernoulli(logits=jnp.zeros(4)).log_prob(x_odd)
        return grad, hess, tangent, odd, LogitBernoulli(logits=lg).log_prob(xx)

    grad, hess, tangent, odd, value = probe(logits, x, x_odd)
    sig = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(grad, x - sig, rtol=1e-6, atol=1e-7)  # NaN logit: NaN grad
    np.testing.assert_allclose(hess, -sig * (1 - sig), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tangent, jnp.sum((x - sig)[:-1]), rtol=1e-5)
    assert bool(jnp.isnan(value[-1]))  # a NaN logit gives NaN
    assert bool(jnp.isnan(odd[0]))  # a NaN datum gives NaN, not zero mass
    assert odd[1] == -jnp.inf and odd[2] == -jnp.inf  # outside [0, 1]: zero mass
    np.testing.assert_allclose(odd[3], -np.log(2.0), rtol=1e-6)


def test_bernoulli_row_log_prob_equals_elementwise_sum():
    # The fused row rule (one exp per pixel, grouped log1p, hand-written JVP) against the
    # elementwise LogitBernoulli summed over the row: values to float32 rounding of a
    # ~500-nat sum (both are checked against a float64 reference), first and second
    # derivatives, forward mode, d/dx, and the NaN / -inf / +-inf contract.
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(4, 3, 784)) * 4, jnp.float32)
    x = jnp.asarray(rng.random((3, 784)) < 0.4, jnp.float32)
    special = jnp.array([-jnp.inf, -1e4, -30.0, -2.0, 0.0, 0.7, 30.0, 1e4, jnp.inf], jnp.float32)
    x_special = jnp.array([0.0, 0.3, 1.0, 0.0, 1.0, 0.3, 1.0, 0.0, 1.0], jnp.float32)

    def ref(lg, xx):
        return jnp.sum(LogitBernoulli(logits=lg).log_prob(xx), -1)

    @jax.jit
    def probe(lg, xx, sp, xs):
        new, old = bernoulli_row_log_prob(xx, lg), ref(lg, xx)
        g_new = jax.grad(lambda a, b: jnp.sum(bernoulli_row_log_prob(b, a)), (0, 1))(lg, xx)
        g_old = jax.grad(lambda a, b: jnp.sum(ref(a, b)), (0, 1))(lg, xx)
        hess = jax.hessian(lambda a: bernoulli_row_log_prob(xs[3:7], a))(sp[3:7])
        _, tangent = jax.jvp(lambda a: bernoulli_row_log_prob(xs, a), (sp,), (jnp.ones_like(sp),))
        g_special = jax.grad(lambda a: bernoulli_row_log_prob(xs, a))(sp)
        odd = bernoulli_row_log_prob(
            jnp.array([[jnp.nan, 0.0], [1.5, 0.0], [-0.5, 1.0], [1.0, 0.0]]), jnp.zeros((4, 2))
        )
        nan_logit = bernoulli_row_log_prob(xs[:2], jnp.array([0.0, jnp.nan]))
        return new, old, g_new, g_old, hess, tangent, g_special, odd, nan_logit

    new, old, g_new, g_old, hess, tangent, g_special, odd, nan_logit = probe(
        logits, x, special, x_special
    )
    assert new.shape == (4, 3)
    truth = np.sum(np.float64(x) * np.float64(logits) - np.logaddexp(np.float64(logits), 0.0), -1)
    err_new, err_old = np.abs(np.float64(new) - truth), np.abs(np.float64(old) - truth)
    assert err_new.max() < 1e-3 and err_new.mean() < 2 * err_old.mean() + 1e-5
    for a, b in zip(g_new, g_old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    sig = jax.nn.sigmoid(special)
    np.testing.assert_allclose(jnp.diag(hess), -(sig * (1 - sig))[3:7], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(hess - jnp.diag(jnp.diag(hess)), 0.0, atol=1e-7)
    np.testing.assert_allclose(g_special, x_special - sig, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tangent, jnp.sum(x_special - sig), rtol=1e-5)
    assert bool(jnp.isnan(odd[0])) and bool(jnp.isnan(nan_logit))  # NaN in, NaN out
    assert odd[1] == -jnp.inf and odd[2] == -jnp.inf  # outside [0, 1]: zero mass
    np.testing.assert_allclose(odd[3], -2 * np.log(2.0), rtol=1e-6)
    # bernoulli_likelihood uses the row rule; concrete out-of-support data is refused.
    np.testing.assert_allclose(bernoulli_likelihood(logits).log_prob(x), new, rtol=1e-6)
    with pytest.raises(ValueError, match="`x`"):
        bernoulli_likelihood(logits).log_prob(x + 1.0)
    with pytest.raises(ValueError, match="`x`"):
        bernoulli_row_log_prob(x - 1.0, logits)
    with pytest.raises(ValueError, match="`logits`"):
        bernoulli_row_log_prob(jnp.float32(1.0), jnp.float32(0.0))
    # vmap over the sample axis gives the batched call.
    np.testing.assert_allclose(
        jax.vmap(bernoulli_row_log_prob, (None, 0))(x, logits), new, rtol=1e-6
    )


@pytest.mark.parametrize("size, dtype", [(784, jnp.float32), (7, jnp.float32), (30, jnp.float16)])
def test_bernoulli_row_log_prob_any_width_and_dtype(size, dtype):
    # The log1p groups divide the width (a prime width gets groups of one) and never
    # overflow the dtype (float16: at most 15 factors of up to 2).
    from vi_jax.models.likelihoods import _group_size

    g = _group_size(size, dtype)
    assert size % g == 0 and 2.0**g < float(jnp.finfo(dtype).max)
    rng = np.random.default_rng(size)
    logits = jnp.asarray(rng.normal(size=(2, size)) * 3, dtype)
    x = jnp.asarray(rng.random(size) < 0.5, dtype)
    truth = np.sum(np.float64(x) * np.float64(logits) - np.logaddexp(np.float64(logits), 0), -1)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(
        np.float64(bernoulli_row_log_prob(x, logits)), truth, rtol=tol, atol=tol
    )


def test_gaussian_likelihood_matches_formula():
    rng = np.random.default_rng(1)
    loc = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    scale = jnp.linspace(0.5, 2.0, 5)
    x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    p = gaussian_likelihood(loc, scale)
    assert p.batch_shape == (3, 4) and p.event_shape == (5,)
    expected = jnp.sum(
        -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi), -1
    )
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-5)
    np.testing.assert_allclose(
        gaussian_likelihood(loc, log_scale=jnp.log(scale)).log_prob(x), expected, rtol=1e-5
    )
    np.testing.assert_allclose(gaussian_likelihood(loc, 0.5).stddev(), 0.5, rtol=1e-6)


def test_gaussian_likelihood_refusals():
    loc = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_likelihood(loc)
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_likelihood(loc, 1.0, log_scale=0.0)
    with pytest.raises(ValueError, match="`scale`"):
        gaussian_likelihood(loc, -1.0)
    with pytest.raises(ValueError, match="`scale`"):
        gaussian_likelihood(loc, jnp.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="`logits`"):
        bernoulli_likelihood(jnp.float32(0.0))


@pytest.fixture(scope="module")
def net():
    return MLP(2, [16], 64, rngs=nnx.Rngs(1))


def test_bernoulli_decoder(net):
    dec = BernoulliDecoder(net)
    assert dec.data_dim == 64 and dec.latent_dim == 2
    z = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 2)), jnp.float32)
    p = dec(z)
    assert p.batch_shape == (3, 5) and p.event_shape == (64,)
    x = jnp.zeros((5, 64))
    np.testing.assert_allclose(p.log_prob(x), _bce(x, net(z)), rtol=1e-5)


def test_gaussian_decoder_learned_and_fixed_scale(net):
    dec = GaussianDecoder(net, init_scale=0.7)
    np.testing.assert_allclose(dec.scale(), jnp.full((64,), 0.7), rtol=1e-5)
    _, params, _ = split_params(dec)
    assert "raw_scale" in params
    z = jnp.zeros((4, 2))
    assert dec(z).batch_shape == (4,)
    fixed = GaussianDecoder(net, learn_scale=False, init_scale=0.3)
    _, fparams, _ = split_params(fixed)
    assert "raw_scale" not in fparams
    np.testing.assert_allclose(fixed(z).stddev(), 0.3, rtol=1e-6)


def test_gaussian_decoder_grad_reaches_scale(net):
    dec = GaussianDecoder(net)
    graphdef, params, rest = split_params(dec)
    z = jnp.asarray(np.random.default_rng(3).normal(size=(3, 2)), jnp.float32)
    x = jnp.ones((3, 64))

    def f(p):
        return jnp.sum(merge_params(graphdef, p, rest)(z).log_prob(x))

    g = jax.jit(jax.grad(f))(params)
    assert bool(jnp.all(g["raw_scale"][...] != 0))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))


def test_decoder_refusals(net):
    with pytest.raises(ValueError, match="`data_dim`"):
        BernoulliDecoder(net, data_dim=10)
    with pytest.raises(ValueError, match="`init_scale`"):
        GaussianDecoder(net, init_scale=0.0)
    with pytest.raises(TypeError, match="`net`"):
        GaussianDecoder(jnp.tanh)
