import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from vi_jax.estimators import weights as vw

F32 = jnp.zeros(()).dtype == jnp.float32
RTOL = 1e-5 if F32 else 1e-10


# --------------------------------------------------------------------- numpy reference
def _reference_psis(log_w):
    """Plain float64 numpy PSIS (one weight vector) written from the paper's description:
    tail M = ceil(min(0.2 S, 3 sqrt(S))), cut-off at the (M+1)-th largest, Zhang & Stephens
    grid of 30 + floor(sqrt(n)) points, prior shrinkage (n k + 5) / (n + 10), and tail
    replaced by GPD quantiles at (i - 1/2)/n truncated at the largest raw weight."""
    x = np.asarray(log_w, np.float64).copy()
    s = x.size
    m_tail = int(np.ceil(min(0.2 * s, 3 * np.sqrt(s))))
    x -= x.max()
    order = np.argsort(x)
    cut = max(x[order[-m_tail - 1]], np.log(np.finfo(np.float64).tiny))
    idx = np.where(x > cut)[0]
    y = np.exp(x[idx]) - np.exp(cut)
    srt = np.argsort(y)
    y = y[srt]
    n = y.size
    m = 30 + int(np.sqrt(n))
    b = 1 / y[-1] + (1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / (3 * y[int(n / 4 + 0.5) - 1])
    k_grid = np.mean(np.log1p(-b[:, None] * y[None]), axis=1)
    prof = n * (np.log(-b / k_grid) - k_grid - 1)
    w = np.exp(prof - prof.max())
    w /= w.sum()
    w = np.where(w >= 10 * np.finfo(np.float64).eps, w, 0.0)
    w /= w.sum()
    b_post = np.sum(w * b)
    k = np.mean(np.log1p(-b_post * y))
    sigma = -k / b_post
    k = (n * k + 10 * 0.5) / (n + 10)
    p = (np.arange(n) + 0.5) / n
    q = sigma * np.expm1(-k * np.log1p(-p)) / k
    x[idx[srt]] = np.minimum(np.log(np.exp(cut) + q), 0.0)
    return k, x + np.max(log_w)


def _heavy_log_weights(key, shape, xi):
    """log w with w = U^(-xi): a Pareto tail with index xi (P(w > t) = t^(-1/xi))."""
    u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.zeros(()).dtype).tiny)
    return -xi * jnp.log(u)


# --------------------------------------------------------------------- log_mean_exp
def test_log_mean_exp_matches_numpy_and_axis():
    lw = jax.random.normal(jax.random.key(0), (7, 3, 2)) * 5
    ref = np.log(np.mean(np.exp(np.asarray(lw, np.float64)), axis=0))
    np.testing.assert_allclose(vw.log_mean_exp(lw), ref, rtol=RTOL * 10)
    ref1 = np.log(np.mean(np.exp(np.asarray(lw, np.float64)), axis=1))
    np.testing.assert_allclose(vw.log_mean_exp(lw, axis=1), ref1, rtol=RTOL * 10)
    np.testing.assert_allclose(vw.log_mean_exp(lw, axis=-1), vw.log_mean_exp(lw, axis=2))
    # a bound of K samples is logsumexp - log K, with no overflow for large log-weights
    big = jnp.array([1000.0, 1000.0])
    np.testing.assert_allclose(vw.log_mean_exp(big), 1000.0, rtol=RTOL)


def test_log_mean_exp_all_minus_inf_is_minus_inf_with_zero_grad():
    lw = jnp.array([[-jnp.inf, 0.0], [-jnp.inf, 1.0]])
    out = vw.log_mean_exp(lw)
    assert out[0] == -jnp.inf and np.isfinite(out[1])
    g = jax.grad(lambda v: vw.log_mean_exp(v)[0])(lw)
    assert np.all(np.isfinite(g)) and np.all(g == 0)


def test_log_mean_exp_jit_vmap_grad():
    lw = jax.random.normal(jax.random.key(1), (5, 4, 3))
    f = jax.jit(vw.log_mean_exp, static_argnames="axis")
    np.testing.assert_allclose(f(lw, axis=0), vw.log_mean_exp(lw), rtol=RTOL)
    np.testing.assert_allclose(
        jax.vmap(vw.log_mean_exp, in_axes=1)(lw), vw.log_mean_exp(lw), rtol=RTOL
    )
    g = jax.grad(lambda v: vw.log_mean_exp(v).sum())(lw)
    np.testing.assert_allclose(g, vw.normalized_weights(lw), rtol=1e-4)


# --------------------------------------------------------------------- normalised, ESS
def test_normalized_weights_sum_to_one_and_undefined_case():
    lw = jax.random.normal(jax.random.key(2), (6, 3)) * 3
    w = vw.normalized_weights(lw)
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=RTOL * 10)
    np.testing.assert_allclose(w, jax.nn.softmax(lw, axis=0), rtol=1e-5)
    assert np.all(np.isnan(vw.normalized_weights(jnp.full((4, 1), -jnp.inf))))
    wj = jax.jit(vw.normalized_weights)(lw)
    np.testing.assert_allclose(wj, w, rtol=1e-5)
    wv = jax.vmap(vw.normalized_weights, in_axes=1, out_axes=1)(lw)
    np.testing.assert_allclose(wv, w, rtol=1e-5)
    g = jax.grad(lambda v: vw.normalized_weights(v)[0, 0])(lw)
    assert np.all(np.isfinite(g))


def test_ess_equal_weights_is_k_and_dominant_weight_is_one():
    k = 50
    np.testing.assert_allclose(vw.effective_sample_size(jnp.full((k, 2), -3.0)), k, rtol=RTOL)
    dominant = jnp.zeros(k).at[7].set(40.0)
    np.testing.assert_allclose(vw.effective_sample_size(dominant), 1.0, rtol=1e-6)
    # half the weights zero, the other half equal: ESS = K/2
    half = jnp.where(jnp.arange(k) < k // 2, 0.0, -jnp.inf)
    np.testing.assert_allclose(vw.effective_sample_size(half), k / 2, rtol=RTOL)
    # matches (sum w)^2 / sum w^2 on random weights
    lw = jax.random.normal(jax.random.key(3), (k, 3))
    w = np.exp(np.asarray(lw, np.float64))
    np.testing.assert_allclose(
        vw.effective_sample_size(lw), w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-5
    )


def test_ess_all_zero_weights_is_zero_with_finite_grad():
    lw = jnp.full((5, 2), -jnp.inf).at[:, 1].set(0.0)
    ess = vw.effective_sample_size(lw)
    np.testing.assert_allclose(ess, [0.0, 5.0], rtol=RTOL)
    g = jax.grad(lambda v: vw.effective_sample_size(v).sum())(lw)
    assert np.all(np.isfinite(g))


def test_ess_jit_vmap_grad():
    lw = jax.random.normal(jax.random.key(4), (8, 3))
    ess = vw.effective_sample_size(lw)
    np.testing.assert_allclose(jax.jit(vw.effective_sample_size)(lw), ess, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(vw.effective_sample_size, in_axes=1)(lw), ess, rtol=1e-5)
    g = jax.grad(lambda v: vw.effective_sample_size(v).sum())(lw)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # equal weights maximise ESS: the gradient vanishes there
    g0 = jax.grad(lambda v: vw.effective_sample_size(v))(jnp.zeros(8))
    np.testing.assert_allclose(g0, 0.0, atol=1e-5)


# --------------------------------------------------------------------- Pareto k-hat
def test_tail_length_and_thresholds():
    assert vw.PARETO_K_THRESHOLD == 0.7
    assert vw.pareto_tail_length(100) == 20  # 0.2 K
    assert vw.pareto_tail_length(10_000) == 300  # 3 sqrt(K)
    assert vw.pareto_tail_length(100_000) == 949
    np.testing.assert_allclose(vw.pareto_k_threshold(100), 0.5)
    assert vw.pareto_k_threshold(100_000) == 0.7


def test_pareto_khat_matches_reference_implementation():
    # Same algorithm, written independently in float64 numpy above. K = 3000 uses the
    # 3 sqrt(K) tail, K = 50 the 0.2 K one.
    cases = [
        _heavy_log_weights(jax.random.key(5), (3000,), 0.8),
        jax.random.normal(jax.random.key(6), (3000,)) * 2.0,
        _heavy_log_weights(jax.random.key(7), (50,), 0.4),
    ]
    tol = 2e-4 if F32 else 1e-9
    for lw in cases:
        k_ref, smooth_ref = _reference_psis(lw)
        smooth, khat = vw.pareto_smooth(lw)
        np.testing.assert_allclose(vw.pareto_khat(lw), k_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(khat, k_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(smooth, smooth_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("xi", [0.3, 0.7, 1.2])
def test_pareto_khat_recovers_known_tail_index(xi):
    # w = U^(-xi) has exactly GPD exceedances with shape xi over any threshold. With
    # K = 1e5 the tail has M = 949 draws; the asymptotic standard deviation of the
    # Zhang-Stephens estimate is (1 + xi)/sqrt(M) (about 0.04-0.07 here, as measured over
    # 40 seeds while writing this test), so the mean over S seeds is within
    # 4 (1 + xi)/sqrt(M S) plus the prior's pull 10 |0.5 - xi| / (M + 10).
    num_seeds, k = 8, 100_000
    lw = _heavy_log_weights(jax.random.key(8), (k, num_seeds), xi)
    khat = np.asarray(jax.jit(vw.pareto_khat)(lw))
    m = vw.pareto_tail_length(k)
    tol = 4 * (1 + xi) / math.sqrt(m * num_seeds) + 10 * abs(0.5 - xi) / (m + 10)
    assert abs(khat.mean() - xi) < tol, (khat, tol)


def test_pareto_khat_gaussian_proposals():
    k, seeds = 4000, 8
    z = jax.random.normal(jax.random.key(9), (k, seeds))
    # a proposal a little wider than the Gaussian target: bounded weights, k-hat < 0.5
    wide = 1.2 * z
    khat = vw.pareto_khat(norm.logpdf(wide) - norm.logpdf(wide, scale=1.2))
    assert np.all(khat < 0.5), khat
    # proposal equal to the target: equal weights, nothing to fit (-inf < 0.5)
    assert np.all(vw.pareto_khat(norm.logpdf(z) - norm.logpdf(z)) == -np.inf)


def test_pareto_khat_too_narrow_proposal_is_flagged():
    # target N(0, 5^2), proposal N(0, 1): log w = 0.48 z^2 + c, whose tail index is
    # 1 - 1/25 = 0.96 (infinite variance); pre-asymptotic estimates are lower (about
    # 0.9 +- 0.1 per seed at K = 20000), so test the mean over seeds with its stderr.
    k, seeds = 20_000, 8
    z = jax.random.normal(jax.random.key(10), (k, seeds))
    khat = np.asarray(vw.pareto_khat(norm.logpdf(z, scale=5.0) - norm.logpdf(z)))
    se = khat.std(ddof=1) / math.sqrt(seeds)
    assert khat.mean() - 3 * se > vw.PARETO_K_THRESHOLD, khat


def test_pareto_khat_special_cases_and_shapes():
    assert vw.pareto_khat(jnp.zeros(20)) == np.inf  # K <= 20: no tail of 5 draws
    lw = _heavy_log_weights(jax.random.key(11), (200, 2, 3), 0.5)
    special = lw.at[:, 0, 0].set(-jnp.inf)  # no positive weight: +inf
    special = special.at[3:, 0, 1].set(-jnp.inf)  # 3 positive weights (< 5): +inf
    special = special.at[:, 0, 2].set(1.5)  # equal weights: nothing to fit, -inf
    special = special.at[:5, 1, 0].set(-jnp.inf)  # a few zero weights in the body: fine
    khat = vw.pareto_khat(special)
    assert khat.shape == (2, 3)
    np.testing.assert_array_equal(khat[0], [np.inf, np.inf, -np.inf])
    assert np.all(np.isfinite(khat[1]))
    np.testing.assert_allclose(khat[1, 2], vw.pareto_khat(lw[:, 1, 2]), rtol=1e-6)
    # k-hat is invariant to the scale of the weights
    np.testing.assert_allclose(vw.pareto_khat(lw + 123.0), vw.pareto_khat(lw), rtol=1e-3, atol=1e-3)


def test_pareto_khat_jit_vmap_grad():
    lw = _heavy_log_weights(jax.random.key(12), (200, 4), 0.6)
    khat = vw.pareto_khat(lw)
    np.testing.assert_allclose(jax.jit(vw.pareto_khat)(lw), khat, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(vw.pareto_khat, in_axes=1)(lw), khat, rtol=1e-5)
    grad = jax.jit(jax.grad(lambda v: vw.pareto_khat(v).sum()))
    g = grad(lw)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # gradients stay finite in the special cases too
    special = lw.at[:, 0].set(-jnp.inf).at[:, 1].set(0.0)
    assert np.all(np.isfinite(grad(special)))


def test_pareto_smooth_properties():
    lw = _heavy_log_weights(jax.random.key(13), (200, 4), 1.0)
    smooth, khat = jax.jit(vw.pareto_smooth)(lw)
    assert smooth.shape == lw.shape and khat.shape == (4,)
    np.testing.assert_allclose(khat, vw.pareto_khat(lw), rtol=1e-5)
    m = vw.pareto_tail_length(200)
    order = np.argsort(-np.asarray(lw), axis=0)
    for j in range(4):
        body = order[m:, j]
        np.testing.assert_array_equal(smooth[body, j], lw[body, j])  # body untouched
        assert np.max(smooth[:, j]) <= np.max(lw[:, j])  # truncated at the raw maximum
        tail = order[:m, j]
        assert np.all(np.diff(np.asarray(smooth[tail, j])) <= 1e-6)  # ranks kept
    sv, kv = jax.vmap(vw.pareto_smooth, in_axes=1, out_axes=(1, 0))(lw)
    np.testing.assert_allclose(sv, smooth, rtol=1e-5)
    np.testing.assert_allclose(kv, khat, rtol=1e-5)
    g = jax.grad(lambda v: vw.log_mean_exp(vw.pareto_smooth(v)[0]).sum())(lw)
    assert np.all(np.isfinite(g))
    # shifting all log-weights by c shifts the smoothed ones by c: gradients sum to 1
    np.testing.assert_allclose(g.sum(0), 1.0, rtol=1e-4)
    # no fit (equal weights): unchanged
    const = jnp.zeros((200, 4))
    np.testing.assert_array_equal(vw.pareto_smooth(const)[0], const)


# --------------------------------------------------------------------- refusals
def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="log_w"):
        vw.log_mean_exp(jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="log_w"):
        vw.effective_sample_size(jnp.array(1.0))
    with pytest.raises(ValueError, match="log_w"):
        vw.pareto_khat(jnp.array([0.0, jnp.inf]))
    with pytest.raises(TypeError, match="log_w"):
        vw.normalized_weights(jnp.arange(3))
    with pytest.raises(ValueError, match="log_w"):
        vw.pareto_smooth(jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="axis"):
        vw.log_mean_exp(jnp.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="num_samples"):
        vw.pareto_tail_length(0)
    with pytest.raises(TypeError, match="num_samples"):
        vw.pareto_k_threshold(10.0)
