"""Discrete-latent estimators graded against the exact gradient (enumeration of q's support)."""

from __future__ import annotations

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.estimators import (
    discrete,
    elbo_pathwise,
    elbo_score_function_loo,
    elbo_stl,
    enumerate_binary_log_marginal,
    importance_log_marginal,
    iwae_dreg,
    registry,
    vimco,
)
from vi_jax.families import factorised_bernoulli, grouped_one_hot

D, B, P = 4, 2, 6
NUM_KEYS = 4000
W = jax.random.normal(jax.random.key(1), (D, P))
X = (jax.random.uniform(jax.random.key(2), (B, P)) < 0.5).astype(jnp.float32)
PRIOR = jnp.full((D,), -0.3)
PHI = 0.8 * jax.random.normal(jax.random.key(3), (B, D))
KEYS = jax.random.split(jax.random.key(0), NUM_KEYS)
TEMPERATURES = (2.0, 1.0, 0.5)


def log_joint(z):
    """A small sigmoid belief net: Bernoulli prior, x | z ~ Bernoulli(sigmoid(z W - 1/2))."""
    lp = jnp.sum(z * PRIOR - jax.nn.softplus(PRIOR), -1)
    logits = z @ W - 0.5
    return lp + jnp.sum(X * logits - jax.nn.softplus(logits), -1)


EXACT = jax.grad(lambda p: discrete.exact_elbo(log_joint, factorised_bernoulli(p)).sum())(PHI)


@jax.jit
def _grads_and_values(phi, temperature, baseline):
    """Per-key phi gradients and values of every estimator (one compilation)."""

    def one(key):
        out = {}
        ests = {
            "arm": (discrete.arm, {}),
            "disarm": (discrete.disarm, {}),
            "nvil": (discrete.nvil, {"baseline": baseline}),
            "loo": (elbo_score_function_loo, {}),
            "gumbel_softmax": (discrete.gumbel_softmax, {"temperature": temperature}),
            "straight_through": (discrete.straight_through, {"temperature": temperature}),
        }
        for name, (est, kw) in ests.items():
            k = 2 if name == "loo" else 1

            def s(p, est=est, kw=kw, k=k):
                return est(key, log_joint, factorised_bernoulli(p), k, **kw).sum()

            out[name] = jax.value_and_grad(s)(phi)
        return out

    return jax.vmap(one)(KEYS)


def _stats(g):
    g = np.asarray(g, np.float64)
    return g.mean(0), g.std(0, ddof=1) / np.sqrt(g.shape[0]), g.var(0, ddof=1).sum()


@pytest.fixture(scope="module")
def runs():
    base = jnp.array([-6.0, -4.0])
    return {t: _grads_and_values(PHI, t, base) for t in TEMPERATURES}


@pytest.mark.parametrize("name", ["arm", "disarm", "nvil", "loo"])
def test_unbiased_against_exact_gradient(runs, name):
    value, grad = runs[1.0][name]
    mean, se, _ = _stats(grad)
    assert np.all(np.abs(mean - np.asarray(EXACT)) < 4 * se), (mean, EXACT, se)
    exact_value = float(discrete.exact_elbo(log_joint, factorised_bernoulli(PHI)).sum())
    v = np.asarray(value, np.float64)
    assert abs(v.mean() - exact_value) < 4 * v.std(ddof=1) / np.sqrt(v.size)


def test_disarm_variance_at_most_arm(runs):
    var_arm = _stats(runs[1.0]["arm"][1])[2]
    var_disarm = _stats(runs[1.0]["disarm"][1])[2]
    # Same keys, same antithetic pairs: DisARM is ARM conditioned on (b, b~).
    assert var_disarm <= var_arm, (var_disarm, var_arm)


def test_nvil_baseline_reduces_variance(runs):
    # With a baseline near the ELBO (about -5) the score function's variance drops.
    _, grad0 = _grads_and_values(PHI, 1.0, jnp.zeros(B) + 5.0)["nvil"]
    assert _stats(runs[1.0]["nvil"][1])[2] < _stats(grad0)[2]


def test_relaxation_bias_falls_variance_rises_with_temperature(runs):
    bias, var = [], []
    for t in TEMPERATURES:
        mean, se, v = _stats(runs[t]["gumbel_softmax"][1])
        # squared bias with the Monte Carlo noise of the mean removed
        bias.append(np.sum((mean - np.asarray(EXACT)) ** 2) - np.sum(se**2))
        var.append(v)
    assert bias[0] > bias[1] > bias[2], bias
    assert var[0] < var[1] < var[2], var
    # biased at tau = 1: far outside the standard error
    mean, se, _ = _stats(runs[1.0]["gumbel_softmax"][1])
    assert np.max(np.abs(mean - np.asarray(EXACT)) / se) > 10


def test_straight_through_is_biased_and_its_value_is_the_elbo(runs):
    value, grad = runs[1.0]["straight_through"]
    mean, se, _ = _stats(grad)
    assert np.max(np.abs(mean - np.asarray(EXACT)) / se) > 10
    exact_value = float(discrete.exact_elbo(log_joint, factorised_bernoulli(PHI)).sum())
    v = np.asarray(value, np.float64)
    assert abs(v.mean() - exact_value) < 4 * v.std(ddof=1) / np.sqrt(v.size)


@jax.jit
def _nvil_gradients(base, state):
    """NVIL's baseline gradient, and phi gradients without and with a running state."""
    q = factorised_bernoulli(PHI)
    g_base = jax.grad(lambda b: discrete.nvil(KEYS[0], log_joint, q, 3, baseline=b).sum())(base)
    z = q.sample(seed=KEYS[0], sample_shape=(3,))
    f = log_joint(z) - q.log_prob(z)

    def phi_grad(st):
        return jax.grad(
            lambda p: discrete.nvil(KEYS[1], log_joint, factorised_bernoulli(p), 2, state=st).sum()
        )(PHI)

    return g_base, f, phi_grad(None), phi_grad(state)


def test_nvil_baseline_is_fitted_by_squared_error_and_state_normalises():
    base = jnp.array([0.0, 1.0])
    s = discrete.NVILState(jnp.zeros(()), jnp.array(16.0))
    g_base, f, g1, g4 = _nvil_gradients(base, s)
    np.testing.assert_allclose(g_base, jnp.mean(f - base, axis=0), rtol=1e-5)
    np.testing.assert_allclose(g4, g1 / 4.0, rtol=1e-5)  # divided by s = sqrt(16)
    state = discrete.nvil_update(discrete.nvil_init(), jnp.array([10.0, 30.0]), decay=0.5)
    np.testing.assert_allclose([state.mean, state.var], [10.0, 50.5])


def test_exact_elbo_matches_a_python_sum():
    # All 2^D configurations listed by itertools (not by the code under test), in numpy.
    bits = np.array(list(itertools.product([0.0, 1.0], repeat=D)))  # [16, D]
    z = np.broadcast_to(bits[:, None], (len(bits), B, D))
    phi = np.asarray(PHI, np.float64)
    lq = np.sum(z * phi - np.logaddexp(0.0, phi), -1)  # log Bernoulli(z; sigmoid(phi))
    total = np.sum(np.exp(lq) * (np.asarray(log_joint(jnp.asarray(z, jnp.float32))) - lq), 0)
    q = factorised_bernoulli(PHI)
    np.testing.assert_allclose(discrete.exact_elbo(log_joint, q), total, rtol=1e-5)


def test_exact_elbo_categorical_and_its_gradient_zero_at_posterior():
    # A categorical q equal to the exact posterior: ELBO = log p(x), gradient 0.
    g, c = 2, 3
    table = jax.random.normal(jax.random.key(7), (c**g,))

    def lj(z):  # z [n, G*C] one-hot pairs -> an arbitrary joint table
        idx = jnp.argmax(z[..., :c], -1) * c + jnp.argmax(z[..., c:], -1)
        return table[idx]

    log_px = jax.nn.logsumexp(table)
    post = (table - log_px).reshape(c, c)
    # the posterior is a product only if the table factorises: make it so
    row, col = jax.nn.log_softmax(post.sum(1)), jax.nn.log_softmax(post.sum(0))
    table = (row[:, None] + col[None, :]).reshape(-1) + 2.0
    logits = jnp.stack([row, col])
    elbo, grad = jax.jit(
        jax.value_and_grad(lambda lg: discrete.exact_elbo(lj, grouped_one_hot(lg)))
    )(logits)
    np.testing.assert_allclose(elbo, jax.nn.logsumexp(table), rtol=1e-5)
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)


def test_categorical_relaxation_runs_under_jit_vmap_grad():
    logits = jnp.zeros((B, 3, 2))
    w = jax.random.normal(jax.random.key(4), (6, P))

    def lj(z):
        return jnp.sum(X * (z @ w) - jax.nn.softplus(z @ w), -1)

    @jax.jit
    def f(logits, k):
        return [
            jax.grad(lambda lg, est=est: est(k, lj, grouped_one_hot(lg), 2).sum())(logits)
            for est in (discrete.gumbel_softmax, discrete.straight_through)
        ]

    for g in f(logits, KEYS[0]):
        assert g.shape == (B, 3, 2) and np.all(np.isfinite(g)) and np.any(g != 0)


# --------------------------------------------------------------------- NaN and -inf

NAN_ESTIMATORS = {
    "nvil": (discrete.nvil, 1, {"baseline": jnp.array([-6.0, -4.0])}),
    "arm": (discrete.arm, 2, {}),
    "disarm": (discrete.disarm, 2, {}),
    "gumbel_softmax": (discrete.gumbel_softmax, 2, {"temperature": 0.5}),
    "straight_through": (discrete.straight_through, 2, {"temperature": 0.5}),
    "loo": (elbo_score_function_loo, 2, {}),
    "vimco": (vimco, 2, {}),
}


DISCRETE = ("nvil", "arm", "disarm", "gumbel_softmax", "straight_through")
OFFSETS = {
    "clean": [0.0, 0.0],
    "nan": [np.nan, 0.0],
    "-inf": [-np.inf, 0.0],
    "-inf second": [0.0, -np.inf],
}


@jax.jit
@jax.vmap  # over the cases: vmap over q's parameters and the data, under jit and grad
def _with_offset(offset, phi):
    """Value and (phi, theta) gradients of each estimator with theta log_joint + offset [B]."""

    def run(est, k, kw):
        def s(phi, theta):
            def lj(z):
                return theta * log_joint(z) + offset

            return est(KEYS[0], lj, factorised_bernoulli(phi), k, **kw)

        value = s(phi, 1.0)
        grads = jax.grad(lambda p, t: s(p, t).sum(), argnums=(0, 1))(phi, 1.0)
        return value, grads

    return {name: run(*spec) for name, spec in NAN_ESTIMATORS.items()}


@pytest.fixture(scope="module")
def offset_runs():
    out = _with_offset(jnp.array(list(OFFSETS.values())), jnp.stack([PHI] * len(OFFSETS)))
    return {
        case: jax.tree_util.tree_map(lambda a, i=i: a[i], out) for i, case in enumerate(OFFSETS)
    }


@pytest.mark.parametrize("name", list(NAN_ESTIMATORS))
def test_nan_in_log_joint_gives_nan_value_and_gradient(offset_runs, name):
    clean_value, (clean_phi, _) = offset_runs["clean"][name]
    value, (g_phi, g_theta) = offset_runs["nan"][name]
    assert np.isnan(value[0]) and np.all(np.isnan(g_phi[0])), (value, g_phi)
    if name in (*DISCRETE, "loo"):  # the model's gradient too: never a plausible number
        assert np.isnan(g_theta)
    # the other datum is untouched (VIMCO and LOO work on a Bernoulli q unchanged)
    np.testing.assert_allclose(value[1], clean_value[1], rtol=1e-6)
    np.testing.assert_allclose(g_phi[1], clean_phi[1], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(clean_value)) and np.all(np.isfinite(clean_phi))


@pytest.mark.parametrize("name", list(NAN_ESTIMATORS))
def test_minus_inf_is_zero_mass_with_zero_gradient(offset_runs, name):
    clean_value, (clean_phi, _) = offset_runs["clean"][name]
    value, (g_phi, g_theta) = offset_runs["-inf"][name]
    assert value[0] == -np.inf and value.shape == (B,)
    np.testing.assert_array_equal(g_phi[0], 0.0)
    assert np.isfinite(g_theta)
    np.testing.assert_allclose(g_phi[1], clean_phi[1], rtol=1e-5, atol=1e-6)
    if name in (*DISCRETE, "loo"):  # a zero-mass datum adds no model gradient: halves sum up
        _, (_, g_theta_second) = offset_runs["-inf second"][name]
        clean_theta = offset_runs["clean"][name][1][1]
        np.testing.assert_allclose(g_theta + g_theta_second, clean_theta, rtol=1e-4)


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature):
    for est in (discrete.gumbel_softmax, discrete.straight_through):
        with pytest.raises(ValueError, match="`temperature`"):
            est(KEYS[0], log_joint, factorised_bernoulli(PHI), 1, temperature=temperature)


@pytest.mark.parametrize("est", [elbo_pathwise, elbo_stl, iwae_dreg])
def test_reparam_estimators_refuse_discrete_q_naming_alternatives(est):
    with pytest.raises(TypeError, match="elbo/disarm") as info:
        est(KEYS[0], log_joint, factorised_bernoulli(PHI), 2)
    for spec in registry.estimators():
        if spec.discrete_ok:
            assert spec.key in str(info.value)
    with pytest.raises(TypeError, match="not reparameterisable"):
        est(KEYS[0], log_joint, grouped_one_hot(jnp.zeros((B, 2, 2))), 2)


@pytest.mark.parametrize("est", [discrete.arm, discrete.disarm])
def test_arm_refuses_non_bernoulli_q(est):
    q = distrax.MultivariateNormalDiag(jnp.zeros((B, D)), jnp.ones((B, D)))
    with pytest.raises(TypeError, match="`q` must be distrax.Independent"):
        est(KEYS[0], log_joint, q, 1)


def test_exact_elbo_refuses_large_support_with_time():
    q = factorised_bernoulli(jnp.zeros((1, 17)))
    with pytest.raises(ValueError, match="would take"):
        discrete.exact_elbo(lambda z: jnp.sum(z, -1), q)


def test_registry_entries():
    for name in ("nvil", "arm", "disarm", "gumbel_softmax", "straight_through"):
        spec = registry.get_estimator("elbo", name)
        assert spec.discrete_ok and not spec.needs_reparam


# --------------------------------------------------------------------- 2^20 exact sums


def test_two_to_the_twenty_matches_closed_form_on_factorised_model():
    d = 20
    a = jax.random.normal(jax.random.key(5), (d,))
    w = 2.0 * jax.random.normal(jax.random.key(6), (d,))
    c = jax.random.normal(jax.random.key(8), (d,))
    x = (jax.random.uniform(jax.random.key(9), (1, d)) < 0.5).astype(jnp.float32)

    def lp_bits(z, xx):  # log p(z_d) + log p(x_d | z_d), x_d depends on z_d alone
        lg = w * z + c
        return z * a - jax.nn.softplus(a) + xx * lg - jax.nn.softplus(lg)

    exact = enumerate_binary_log_marginal(
        lambda z: jnp.sum(lp_bits(z, x), -1), d, chunk_size=2**17, batch_shape=(1,)
    )
    closed = jnp.sum(jnp.logaddexp(lp_bits(0.0, x), lp_bits(1.0, x)), -1)
    np.testing.assert_allclose(exact, closed, rtol=1e-5)


def test_exact_log_marginal_agrees_with_importance_sampling():
    # The 2^20 enumeration is checked against a closed form above; here a 2^10 sum over a
    # coupled sigmoid belief net (no closed form) against importance sampling from the
    # prior. (`BinaryVAE.exact_log_marginal` is this enumeration: tests/models.)
    d, p = 10, 16
    w = 0.7 * jax.random.normal(jax.random.key(10), (d, p))
    x = (jax.random.uniform(jax.random.key(11), (2, p)) < 0.4).astype(jnp.float32)

    def lj(z):  # uniform prior, x | z ~ Bernoulli(sigmoid(z W - 0.3))
        lg = z @ w - 0.3
        return jnp.sum(x * lg - jax.nn.softplus(lg), -1) - d * np.log(2.0)

    exact = enumerate_binary_log_marginal(lj, d, chunk_size=2**d, batch_shape=(2,))
    est = importance_log_marginal(
        jax.random.key(0), lj, factorised_bernoulli(jnp.zeros((2, d))), 20000
    )
    rel_se = np.exp(np.asarray(est.log_stderr - est.log_marginal))
    assert np.all(rel_se < 0.5)
    np.testing.assert_array_less(np.abs(np.asarray(est.log_marginal - exact)), 4 * rel_se)
