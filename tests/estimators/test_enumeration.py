import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.estimators import enumeration as en
from vi_jax.estimators.problems import make_binary_latent_gaussian

F32 = jnp.zeros(()).dtype == jnp.float32
RTOL = 2e-5 if F32 else 1e-10


class Factorised:
    """z_d ~ Bernoulli(sigmoid(l_d)) independently, log p(x | z) = sum_d (z_d a_d + (1 - z_d) c_d).

    Every quantity is available in closed form:
    log p(x) = sum_d log(sigmoid(l_d) e^{a_d} + sigmoid(-l_d) e^{c_d}) and
    p(z_d = 1 | x) = sigmoid(l_d + a_d - c_d). Data batch [B]: a, c are [B, D].
    """

    def __init__(self, key, num_latents, batch):
        k1, k2, k3 = jax.random.split(key, 3)
        self.logits = jax.random.normal(k1, (num_latents,))
        self.a = jax.random.normal(k2, (batch, num_latents))
        self.c = jax.random.normal(k3, (batch, num_latents))

    def log_joint(self, z, a=None, c=None):
        """z [n, *batch, D] -> [n, *batch]; a, c broadcast against z's [*batch, D]."""
        a = self.a if a is None else a
        c = self.c if c is None else c
        lp = z * jax.nn.log_sigmoid(self.logits) + (1 - z) * jax.nn.log_sigmoid(-self.logits)
        return jnp.sum(lp + z * a + (1 - z) * c, axis=-1)

    def log_marginal(self, a=None, c=None):
        a = self.a if a is None else a
        c = self.c if c is None else c
        return jnp.sum(
            jnp.logaddexp(
                jax.nn.log_sigmoid(self.logits) + a, jax.nn.log_sigmoid(-self.logits) + c
            ),
            axis=-1,
        )

    def posterior_marginals(self, a=None, c=None):
        a = self.a if a is None else a
        c = self.c if c is None else c
        return jax.nn.sigmoid(self.logits + a - c)


# --------------------------------------------------------------------- table
def test_eye_colour_table_reproduces_the_lecture_sums():
    t = en.EYE_COLOUR_NATIONALITY_TABLE
    assert t.shape == (3, 8) and en.EYE_COLOURS == ("brown", "blue", "green")
    assert en.NATIONALITIES == (
        "Dutch",
        "Greek",
        "Chinese",
        "Indian",
        "Italian",
        "German",
        "US",
        "Spanish",
    )
    # the slide's printed entries, row by row
    np.testing.assert_array_equal(t[0], [0.02, 0.03, 0.02, 0.01, 0.07, 0.03, 0.01, 0.00])
    np.testing.assert_array_equal(t[1], [0.09, 0.01, 0.03, 0.03, 0.08, 0.04, 0.03, 0.06])
    np.testing.assert_array_equal(t[2], [0.01, 0.01, 0.08, 0.06, 0.07, 0.08, 0.06, 0.06])
    assert np.all(np.abs(t * 100 - np.round(t * 100)) < 1e-9)  # two-decimal entries
    np.testing.assert_allclose(t.sum(axis=1), [0.19, 0.37, 0.43], atol=1e-12)
    np.testing.assert_allclose(t.sum(), 0.99, atol=1e-12)
    assert not t.flags.writeable
    # in log space, with the library functions
    log_t = jnp.log(jnp.asarray(t))
    np.testing.assert_allclose(
        jnp.exp(en.log_marginal_table(log_t, axis=1)), [0.19, 0.37, 0.43], rtol=1e-6
    )
    np.testing.assert_allclose(en.log_marginal_table(log_t, axis=(0, 1)), math.log(0.99), atol=1e-6)
    p = en.normalise_table(t)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p.sum(1), np.array([0.19, 0.37, 0.43]) / 0.99, rtol=1e-6)
    lp = en.normalise_table(log_t, log=True)
    np.testing.assert_allclose(jnp.exp(lp), p, rtol=1e-5)
    # p(nationality | eye colour = blue) = p(blue, .) / p(blue)
    cond = log_t[1] - en.log_marginal_table(log_t, axis=1)[1]
    np.testing.assert_allclose(jnp.exp(cond).sum(), 1.0, rtol=1e-6)
    # the zero cell (brown, Spanish) is zero mass, not NaN, in log space
    assert en.NATIONALITIES[7] == "Spanish" and t[0, 7] == 0.0
    assert np.isfinite(en.log_marginal_table(log_t, axis=1)).all()
    np.testing.assert_allclose(
        jnp.exp(en.log_marginal_table(log_t, axis=0)), t.sum(axis=0), rtol=1e-6
    )


def test_log_marginal_table_zero_cells_jit_vmap_grad():
    log_t = jnp.log(jnp.array([[0.0, 0.2], [0.0, 0.0]]))
    out = en.log_marginal_table(log_t, axis=1)
    assert out[1] == -jnp.inf and np.isclose(out[0], math.log(0.2))
    g = jax.grad(lambda v: en.log_marginal_table(v, axis=1).sum())(log_t)
    assert np.all(np.isfinite(g))
    f = jax.jit(en.log_marginal_table, static_argnames="axis")
    np.testing.assert_allclose(f(log_t, axis=0), en.log_marginal_table(log_t, axis=0))
    tables = jnp.log(jax.random.uniform(jax.random.key(0), (4, 3, 2)))
    vm = jax.vmap(lambda t: en.log_marginal_table(t, axis=0))(tables)
    np.testing.assert_allclose(vm, en.log_marginal_table(tables, axis=1), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(en.normalise_table)(jnp.ones((2, 2))), 0.25)
    np.testing.assert_allclose(jax.vmap(en.normalise_table)(jnp.ones((3, 2, 2))), 0.25)
    gn = jax.grad(lambda t: en.normalise_table(t)[0, 0])(jnp.ones((2, 2)))
    np.testing.assert_allclose(gn, [[0.1875, -0.0625], [-0.0625, -0.0625]], rtol=1e-6)


# --------------------------------------------------------------------- binary support
def test_binary_support_order_and_dtype():
    s = en.binary_support(3)
    np.testing.assert_array_equal(s, np.array(list(itertools.product([0, 1], repeat=3))))
    assert s.dtype == jnp.zeros(()).dtype
    assert en.binary_support(2, dtype=jnp.float16).dtype == jnp.float16
    assert en.binary_support(10).shape == (1024, 10)


# --------------------------------------------------------------------- exact marginals
def test_d20_chunked_matches_closed_form():
    m = Factorised(jax.random.key(1), 20, batch=3)
    out = en.enumerate_binary_log_marginal(m.log_joint, 20, batch_shape=(3,))
    np.testing.assert_allclose(out, m.log_marginal(), rtol=RTOL)
    probs = en.enumerate_binary_posterior_marginals(m.log_joint, 20, batch_shape=(3,))
    assert probs.shape == (3, 20)
    np.testing.assert_allclose(probs, m.posterior_marginals(), rtol=1e-4, atol=1e-6)


def test_generic_and_binary_enumeration_agree_with_any_chunking():
    m = Factorised(jax.random.key(2), 8, batch=2)
    support = en.binary_support(8)
    exact = m.log_marginal()
    full = en.enumerate_log_marginal(m.log_joint, support, batch_shape=(2,))
    np.testing.assert_allclose(full, exact, rtol=RTOL)
    # chunks with a remainder (100: 2 x 100 + 56), dividing exactly (64), capped (1000)
    for chunk in (100, 1000):
        out = en.enumerate_log_marginal(m.log_joint, support, batch_shape=(2,), chunk_size=chunk)
        np.testing.assert_allclose(out, exact, rtol=RTOL)
    for chunk in (100, 64):
        out = en.enumerate_binary_log_marginal(m.log_joint, 8, batch_shape=(2,), chunk_size=chunk)
        np.testing.assert_allclose(out, exact, rtol=RTOL)
    # posterior: normalised, factorises, and its marginals match the chunked ones
    log_post = en.enumerate_posterior(m.log_joint, support, batch_shape=(2,))
    assert log_post.shape == (256, 2)
    np.testing.assert_allclose(jnp.exp(log_post).sum(0), 1.0, rtol=1e-5)
    marg = jnp.einsum("zb,zd->bd", jnp.exp(log_post), support)
    np.testing.assert_allclose(marg, m.posterior_marginals(), rtol=1e-4)
    np.testing.assert_allclose(
        en.enumerate_binary_posterior_marginals(m.log_joint, 8, batch_shape=(2,), chunk_size=100),
        m.posterior_marginals(),
        rtol=1e-4,
    )
    pd = m.posterior_marginals()
    closed = jnp.sum(support[:, None] * jnp.log(pd) + (1 - support[:, None]) * jnp.log1p(-pd), -1)
    np.testing.assert_allclose(log_post, closed, rtol=1e-4, atol=1e-4)


def test_binary_latent_gaussian_matches_explicit_sum():
    model = make_binary_latent_gaussian(jax.random.key(3), data_dim=5, latent_dim=6)
    x, _ = model.sample(jax.random.key(4), 2)
    lj = model.log_joint_fn(x)
    out = en.enumerate_binary_log_marginal(lj, 6, batch_shape=(2,), chunk_size=16)
    terms = np.stack(
        [
            np.asarray(lj(jnp.broadcast_to(jnp.asarray(z, x.dtype), (1, 2, 6)))[0], np.float64)
            for z in itertools.product([0, 1], repeat=6)
        ]
    )
    ref = np.log(np.sum(np.exp(terms - terms.max(0)), 0)) + terms.max(0)
    np.testing.assert_allclose(out, ref, rtol=RTOL)


def test_extreme_values_minus_inf_and_grad():
    m = Factorised(jax.random.key(5), 6, batch=2)

    # datum 0 has zero mass everywhere: -inf, not NaN, and a finite gradient
    def lj(z, a):
        return m.log_joint(z, a).at[:, 0].set(-jnp.inf)

    fns = (
        lambda a: en.enumerate_binary_log_marginal(
            lambda z: lj(z, a), 6, batch_shape=(2,), chunk_size=5
        ),
        lambda a: en.enumerate_log_marginal(
            lambda z: lj(z, a), en.binary_support(6), batch_shape=(2,), chunk_size=5
        ),
        lambda a: en.enumerate_log_marginal(
            lambda z: lj(z, a), en.binary_support(6), batch_shape=(2,)
        ),
    )

    @jax.jit
    def everything(a):
        shifted = en.enumerate_binary_log_marginal(
            lambda z: m.log_joint(z, a) - 1e4, 6, batch_shape=(2,), chunk_size=5
        )
        vg = [(fn(a), jax.grad(lambda a: fn(a)[1])(a)) for fn in fns]
        probs = en.enumerate_binary_posterior_marginals(lambda z: lj(z, a), 6, batch_shape=(2,))
        return shifted, vg, probs

    shifted, vg, probs = everything(m.a)
    np.testing.assert_allclose(shifted, m.log_marginal() - 1e4, rtol=RTOL)  # no underflow
    for out, g in vg:
        assert out[0] == -jnp.inf
        np.testing.assert_allclose(out[1], m.log_marginal()[1], rtol=RTOL)
        assert np.all(np.isfinite(g))
        # d log p(x) / d a_d = p(z_d = 1 | x)
        np.testing.assert_allclose(g[1], m.posterior_marginals()[1], rtol=1e-4)
        np.testing.assert_array_equal(g[0], 0.0)
    assert np.all(np.isnan(probs[0]))  # undefined posterior
    np.testing.assert_allclose(probs[1], m.posterior_marginals()[1], rtol=1e-4)


def test_jit_and_vmap_over_data():
    m = Factorised(jax.random.key(6), 10, batch=4)
    support = en.binary_support(10)

    def per_datum(a, c):  # one datum: a, c [D]; batch_shape ()
        lj = lambda z: m.log_joint(z, a, c)  # noqa: E731
        return (
            en.enumerate_binary_log_marginal(lj, 10, chunk_size=300),
            en.enumerate_log_marginal(lj, support, chunk_size=300),
            en.enumerate_posterior(lj, support),
            en.enumerate_binary_posterior_marginals(lj, 10, chunk_size=300),
        )

    @jax.jit
    def everything(a, c):
        outs = jax.vmap(per_datum)(a, c)
        # grad through the chunked scans
        g0 = jax.grad(lambda a: jnp.sum(jax.vmap(per_datum)(a, c)[0]))(a)
        g3 = jax.grad(lambda a: jnp.sum(jax.vmap(per_datum)(a, c)[3]))(a)
        g2 = jax.grad(lambda a: jnp.sum(jax.vmap(per_datum)(a, c)[2][:, 0]))(a)
        return outs, g0, g3, g2

    outs, g0, g3, g2 = everything(m.a, m.c)
    # log p(z = 0 | x) = sum_d log(1 - p_d): its gradient w.r.t. a_d is -p_d
    np.testing.assert_allclose(g2, -m.posterior_marginals(), rtol=1e-4)
    exact = m.log_marginal()
    np.testing.assert_allclose(outs[0], exact, rtol=RTOL)
    np.testing.assert_allclose(outs[1], exact, rtol=RTOL)
    assert outs[2].shape == (4, 1024)
    np.testing.assert_allclose(jnp.exp(outs[2]).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(outs[3], m.posterior_marginals(), rtol=1e-4)
    np.testing.assert_allclose(g0, m.posterior_marginals(), rtol=1e-4)  # d log p(x) / d a
    # d p(z_d = 1 | x) / d a_d = p (1 - p), and the marginals do not depend on a_j, j != d
    p = m.posterior_marginals()
    np.testing.assert_allclose(g3, p * (1 - p), rtol=1e-3, atol=1e-6)


# --------------------------------------------------------------------- refusals
def test_refusals_name_the_argument():
    m = Factorised(jax.random.key(7), 3, batch=2)
    s = en.binary_support(3)
    with pytest.raises(ValueError, match="log_joint"):
        en.enumerate_log_marginal(lambda z: jnp.sum(z), s)  # not one value per point
    with pytest.raises(ValueError, match="log_joint"):
        en.enumerate_binary_log_marginal(lambda z: jnp.sum(z, -1)[..., None], 3, batch_shape=(5,))
    with pytest.raises(TypeError, match="log_joint"):
        en.enumerate_posterior(None, s)
    with pytest.raises(ValueError, match="support"):
        en.enumerate_log_marginal(m.log_joint, jnp.array(1.0), batch_shape=(2,))
    with pytest.raises(ValueError, match="support"):
        en.enumerate_log_marginal(m.log_joint, s.at[0, 0].set(jnp.nan), batch_shape=(2,))
    with pytest.raises(ValueError, match="chunk_size"):
        en.enumerate_log_marginal(m.log_joint, s, batch_shape=(2,), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        en.enumerate_binary_posterior_marginals(m.log_joint, 3, chunk_size=-1)
    with pytest.raises(ValueError, match="num_latents"):
        en.enumerate_binary_log_marginal(m.log_joint, 0)
    with pytest.raises(ValueError, match="num_latents"):
        en.enumerate_binary_log_marginal(m.log_joint, 31)
    with pytest.raises(ValueError, match="num_latents"):
        en.binary_support(21)
    with pytest.raises(TypeError, match="num_latents"):
        en.binary_support(3.0)
    with pytest.raises(ValueError, match="table"):
        en.normalise_table(np.array([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="table"):
        en.normalise_table(np.zeros(3))
    with pytest.raises(ValueError, match="log_table"):
        en.log_marginal_table(jnp.array([0.0, jnp.nan]), axis=0)
    with pytest.raises(ValueError, match="axis"):
        en.log_marginal_table(jnp.zeros((2, 2)), axis=2)
    with pytest.raises(ValueError, match="axis"):
        en.log_marginal_table(jnp.zeros((2, 2)), axis=(0, 0))
