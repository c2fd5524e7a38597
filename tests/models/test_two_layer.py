"""The two-stochastic-layer VAE: its hierarchical distribution and the estimators on it.

A linear-Gaussian two-layer model, z2 ~ N(0, I), z1 | z2 ~ N(B z2 + d, diag t^2),
x | z1 ~ N(W z1 + b, s^2 I), with q(z1 | x) q(z2 | z1) linear-Gaussian, has a closed
ELBO (q is then a Gaussian with a block-triangular scale), hence an exact gradient.
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, flat

import vi_jax.estimators as vie
from vi_jax.models import (
    TwoLevelGaussian,
    iwae_paper_two_layer_vae,
    make_two_layer_vae,
    make_vae_loss,
    merge_params,
    split_params,
    vae_view,
)

LOG_2PI = math.log(2 * math.pi)
SIGMA = 0.7


def _q(phi):
    s2 = jnp.exp(phi["log_s2"])
    return TwoLevelGaussian(
        phi["a"],
        jnp.exp(phi["log_s1"]),
        lambda z1: (z1 @ phi["A"].T + phi["c"], jnp.broadcast_to(s2, z1.shape[:-1] + s2.shape)),
        s2.shape[-1],
    )


def _prior(theta):
    t = jnp.exp(theta["log_t"])
    d2 = theta["B"].shape[1]
    return TwoLevelGaussian(
        jnp.zeros(d2),
        jnp.ones(d2),
        lambda z2: (z2 @ theta["B"].T + theta["d"], jnp.broadcast_to(t, z2.shape[:-1] + t.shape)),
        t.shape[-1],
        root_first=False,
    )


def _log_joint(theta, x):
    prior, d1 = _prior(theta), theta["W"].shape[1]

    def log_joint(z):
        r = (x - z[..., :d1] @ theta["W"].T - theta["b"]) / SIGMA
        lik = -0.5 * jnp.sum(r**2 + LOG_2PI, -1) - x.shape[-1] * math.log(SIGMA)
        return prior.log_prob(z) + lik

    return log_joint


def _q_moments(phi):
    """Mean `[B, D]` and block-triangular scale `[D, D]` of q = N(m, S S^T)."""
    s1, s2, a_mat = jnp.exp(phi["log_s1"]), jnp.exp(phi["log_s2"]), phi["A"]
    d1, d2 = a_mat.shape[1], a_mat.shape[0]
    m = jnp.concatenate([phi["a"], phi["a"] @ a_mat.T + phi["c"]], -1)
    scale = jnp.zeros((phi["a"].shape[0], d1 + d2, d1 + d2))
    scale = scale.at[:, :d1, :d1].set(jax.vmap(jnp.diag)(s1))
    scale = scale.at[:, d1:, :d1].set(a_mat * s1[:, None, :])
    scale = scale.at[:, d1:, d1:].set(jnp.diag(s2))
    return m, scale


def _prior_moments(theta):
    b_mat, t = theta["B"], jnp.exp(theta["log_t"])
    d1, d2 = b_mat.shape
    mean = jnp.concatenate([theta["d"], jnp.zeros(d2)])
    cov = jnp.block([[b_mat @ b_mat.T + jnp.diag(t**2), b_mat], [b_mat.T, jnp.eye(d2)]])
    return mean, cov


def _exact_elbo(phi, theta, x):
    m, scale = _q_moments(phi)
    cov = scale @ jnp.swapaxes(scale, -1, -2)
    d1 = theta["W"].shape[1]
    n, dim = x.shape[-1], m.shape[-1]
    w_full = jnp.concatenate([theta["W"], jnp.zeros((n, dim - d1))], 1)
    resid = x - m @ w_full.T - theta["b"]
    lik = (
        -0.5 * n * (LOG_2PI + 2 * math.log(SIGMA))
        - 0.5 * (jnp.sum(resid**2, -1) + jnp.sum((w_full @ cov) * w_full, (-2, -1))) / SIGMA**2
    )
    mu_p, cov_p = _prior_moments(theta)
    prec = jnp.linalg.inv(cov_p)
    dm = m - mu_p
    prior = -0.5 * (
        dim * LOG_2PI
        + jnp.linalg.slogdet(cov_p)[1]
        + jnp.sum(prec * cov, (-2, -1))
        + jnp.einsum("bi,ij,bj->b", dm, prec, dm)
    )
    entropy = 0.5 * dim * (1 + LOG_2PI) + jnp.sum(phi["log_s1"], -1) + jnp.sum(phi["log_s2"])
    return lik + prior + entropy


@pytest.fixture(scope="module")
def lg2():
    """d1 = 2, d2 = 2, 3 observed dimensions, 2 data points, q off the posterior."""
    ks = jax.random.split(jax.random.key(0), 8)
    d1, d2, n = 2, 2, 3
    theta = {
        "W": jax.random.normal(ks[0], (n, d1)),
        "b": jax.random.normal(ks[1], (n,)),
        "B": jax.random.normal(ks[2], (d1, d2)) * 0.8,
        "d": jax.random.normal(ks[3], (d1,)) * 0.3,
        "log_t": jnp.full((d1,), -0.5),
    }
    phi = {
        "a": jax.random.normal(ks[4], (2, d1)) * 0.5,
        "log_s1": jnp.full((2, d1), -0.7),
        "A": jax.random.normal(ks[5], (d2, d1)) * 0.5,
        "c": jnp.zeros(d2) + 0.1,
        "log_s2": jnp.full((d2,), -0.3),
    }
    x = jax.random.normal(ks[6], (2, n))
    return phi, theta, x


def test_two_level_gaussian_is_the_block_triangular_gaussian(lg2):
    phi, theta, _ = lg2
    q = _q(phi)
    m, scale = _q_moments(phi)
    assert q.batch_shape == (2,) and q.event_shape == (4,)
    z = jax.jit(lambda p: _q(p).sample(seed=jax.random.key(1), sample_shape=(4000,)))(phi)
    ref = distrax.MultivariateNormalTri(m, scale)
    np.testing.assert_allclose(q.log_prob(z[:5]), ref.log_prob(z[:5]), rtol=1e-5, atol=1e-5)
    assert_unbiased(np.asarray(z), m, what="sample mean")
    cov = np.einsum("kbi,kbj->kbij", z - m, z - m)
    assert_unbiased(cov, scale @ np.swapaxes(scale, -1, -2), what="sample covariance")
    # The prior puts its root (z2) last; its density is the joint Gaussian's.
    prior = _prior(theta)
    mu_p, cov_p = _prior_moments(theta)
    zp = prior.sample(seed=jax.random.key(2), sample_shape=(3,))
    np.testing.assert_allclose(
        prior.log_prob(zp),
        distrax.MultivariateNormalFullCovariance(mu_p, cov_p).log_prob(zp),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(q.mean(), m, rtol=1e-6)  # exact for a linear conditional


def _grads(estimators, phi, theta, x, n, seed=0):
    """`{name: (g_phi, g_theta)}`, each leaf `[n, ...]`: every `(name, estimator, k)` of
    `estimators` on independent keys, in ONE compiled program (compilation dominates)."""

    def one(key):
        out = {}
        for i, (name, est, k) in enumerate(estimators):
            ki = jax.random.fold_in(key, i)
            out[name] = jax.grad(
                lambda p, t, e=est, k=k, ki=ki: e(ki, _log_joint(t, x), _q(p), k).sum(), (0, 1)
            )(phi, theta)
        return out

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))


@pytest.fixture(scope="module")
def exact(lg2):
    """The closed-form ELBO `[B]` and its gradient (one compiled program)."""
    phi, theta, x = lg2
    value = lambda p, t: _exact_elbo(p, t, x)  # noqa: E731
    return jax.jit(
        lambda p, t: (value(p, t), jax.grad(lambda a, b: value(a, b).sum(), (0, 1))(p, t))
    )(phi, theta)


ELBO_ESTIMATORS = (("pathwise", 1), ("stl", 1), ("score_function", 1), ("score_function_loo", 2))


def test_elbo_estimators_unbiased_on_two_layer_model(lg2, exact):
    """Every ELBO gradient estimator against the exact gradient, 6000 keys each."""
    phi, theta, x = lg2
    truth = flat(jax.tree_util.tree_map(lambda a: a[None], exact[1]))[0]
    ests = tuple((name, vie.ESTIMATORS[name], k) for name, k in ELBO_ESTIMATORS)
    grads = _grads(ests, phi, theta, x, 6000)
    for name, _ in ELBO_ESTIMATORS:
        assert_unbiased(flat(grads[name]), truth, what=name)


def test_elbo_value_matches_closed_form(lg2, exact):
    phi, theta, x = lg2
    vals = jax.jit(jax.vmap(lambda k: vie.elbo(k, _log_joint(theta, x), _q(phi), 1)))(
        jax.random.split(jax.random.key(3), 4000)
    )
    assert_unbiased(np.asarray(vals), exact[0], what="ELBO")


def test_iwae_estimators_agree_in_mean_on_two_layer_model(lg2):
    """DReG, VIMCO and the pathwise IWAE gradient all estimate grad L_K (K = 4)."""
    phi, theta, x = lg2
    names = ("iwae_pathwise", "dreg", "vimco")
    ests = ((n, vie.iwae_pathwise if n == "iwae_pathwise" else vie.ESTIMATORS[n], 4) for n in names)
    grads = _grads(tuple(ests), phi, theta, x, 2000, seed=1)
    ref = flat(grads["iwae_pathwise"])
    for name in ("dreg", "vimco"):
        g = flat(grads[name])
        diff_se = np.sqrt(g.var(0, ddof=1) / len(g) + ref.var(0, ddof=1) / len(ref))
        err = np.abs(g.mean(0) - ref.mean(0))
        assert np.all(err < 4 * diff_se + 1e-6), (name, err / diff_se)


def test_path_only_gradients_vanish_at_exact_hierarchical_posterior():
    """One latent per layer: q(z1 | x) q(z2 | z1) can equal p(z1 | x) p(z2 | z1).

    Then log p(x, z) - log q(z) = log p(x) for every z, and the phi-gradient of STL and
    DReG is exactly 0 per sample; it would not be if log q's path-only gradient missed
    q(z2 | z1)'s dependence on z1.
    """
    theta = {
        "W": jnp.array([[1.2], [-0.5], [0.8]]),
        "b": jnp.array([0.1, 0.0, -0.3]),
        "B": jnp.array([[0.9]]),
        "d": jnp.array([0.2]),
        "log_t": jnp.array([-0.4]),
    }
    x = jnp.array([[0.5, -0.2, 1.0]])
    bv, t2, dd = 0.81, math.exp(-0.8), 0.2
    var1 = bv + t2  # marginal variance of z1
    w = np.asarray(theta["W"])[:, 0]
    post_var = 1.0 / (1.0 / var1 + w @ w / SIGMA**2)
    post_mean = post_var * (dd / var1 + w @ (np.asarray(x[0]) - np.asarray(theta["b"])) / SIGMA**2)
    phi = {
        "a": jnp.array([[post_mean]]),
        "log_s1": jnp.array([[0.5 * math.log(post_var)]]),
        "A": jnp.array([[0.9 / var1]]),
        "c": jnp.array([-0.9 * dd / var1]),
        "log_s2": jnp.array([0.5 * math.log(t2 / var1)]),
    }
    ests = (
        ("stl", vie.elbo_stl, 3),
        ("dreg", vie.iwae_dreg, 3),
        ("pathwise", vie.elbo_pathwise, 1),
    )
    grads = _grads(ests, phi, theta, x, 16)
    for name in ("stl", "dreg"):
        leaves = jax.tree_util.tree_leaves(grads[name][0])
        assert max(float(jnp.max(jnp.abs(v))) for v in leaves) < 1e-4, name
    leaves = jax.tree_util.tree_leaves(grads["pathwise"][0])  # not path-only: nonzero
    assert max(float(jnp.max(jnp.abs(v))) for v in leaves) > 1e-2


@pytest.fixture(scope="module")
def small_vae():
    """A small two-layer VAE (one construction shared by the tests below)."""
    return make_two_layer_vae(20, (6, 4), ((10, 10), (8, 8)), rngs=0)


def test_two_layer_vae_through_the_vae_loss(small_vae):
    """The real module through `make_vae_loss` (the trainer's path) with a path-only and
    a score-function estimator; the other estimators see the same `TwoLevelGaussian`
    in the linear-Gaussian tests above. One compiled program for all of it."""
    vae = small_vae
    assert vae.latent_dim == 10 and vae.data_dim == 20
    graphdef, params, rest = split_params(vae)
    x = (jax.random.uniform(jax.random.key(0), (4, 20)) > 0.5).astype(jnp.float32)
    names = ("dreg", "score_function")
    losses = [
        make_vae_loss(graphdef, vie.ESTIMATORS[n], num_samples=2, rest=rest, monitor=False)
        for n in names
    ]

    @jax.jit
    def check(params):
        out = [
            jax.value_and_grad(loss, has_aux=True)(params, x, jax.random.key(1)) for loss in losses
        ]
        model = merge_params(graphdef, params, rest)
        zs, xs = model.simulate(jax.random.key(2), 3)
        # vmapped log q over a batch of one example equals the batched one
        lq = jax.vmap(lambda xi, zi: model.posterior(xi[None]).log_prob(zi[None, None])[0, 0])(
            x[:3], zs
        )
        return out, zs, xs, lq, model.posterior(x[:3]).log_prob(zs)

    out, zs, xs, lq, lq_batched = check(params)
    for name, ((value, _), grads) in zip(names, out, strict=True):
        leaves = jax.tree_util.tree_leaves(grads)
        assert np.isfinite(value) and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), name
        assert any(bool(jnp.any(g != 0)) for g in leaves), name
    view = vae_view(graphdef, rest)(params, x)
    assert view.posterior.batch_shape == (4,) and view.posterior.event_shape == (10,)
    assert xs.shape == (3, 20) and zs.shape == (3, 10)
    assert set(np.unique(np.asarray(xs))) <= {0.0, 1.0}
    np.testing.assert_allclose(lq, lq_batched, rtol=1e-5)


def test_paper_architecture_and_refusals(small_vae):
    vae = small_vae
    assert vae.latent_dim == 10 and vae.encoder.dims == (6, 4)
    assert vae.prior.conditional.latent_dim == 6 and vae.decoder.dims == (6, 4)
    assert [layer.out_features for layer in vae.encoder.lower.net.layers] == [10, 10, 12]
    assert [layer.out_features for layer in vae.prior.conditional.net.layers] == [8, 8, 12]
    assert callable(iwae_paper_two_layer_vae)
    with pytest.raises(ValueError, match="`latent_dims`"):
        make_two_layer_vae(12, (3,), ((8,), (5,)), rngs=0)
    with pytest.raises(ValueError, match="`likelihood`"):
        make_two_layer_vae(12, (3, 2), ((8,), (5,)), likelihood="poisson", rngs=0)
    with pytest.raises(TypeError, match="`conditional`"):
        TwoLevelGaussian(jnp.zeros(2), jnp.ones(2), None, 1)
