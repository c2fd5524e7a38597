"""Binary- and categorical-latent VAEs: shapes, the standard loss, exact log p(x), bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.estimators import discrete, vimco
from vi_jax.models import (
    BinaryVAE,
    lecture_binary_vae,
    linear_binary_vae,
    make_binary_vae,
    make_vae_loss,
    nonlinear_binary_vae,
    split_params,
    vae_view,
)

X = (jax.random.uniform(jax.random.key(0), (3, 16)) < 0.5).astype(jnp.float32)


def test_standard_sizes():
    for make, d in (
        (linear_binary_vae, 200),
        (nonlinear_binary_vae, 200),
        (lecture_binary_vae, 20),
    ):
        m = make(rngs=0)
        assert isinstance(m, BinaryVAE) and m.latent_dim == d and m.data_dim == 784
    assert len(nonlinear_binary_vae(rngs=0).encoder.net.layers) == 2
    assert len(linear_binary_vae(rngs=0).decoder.net.layers) == 1


@pytest.mark.parametrize("latent_type", ["bernoulli", "categorical"])
def test_view_and_loss_under_jit_and_grad(latent_type):
    m = make_binary_vae(16, 3, (8,), rngs=0, latent_type=latent_type, num_classes=3)
    graphdef, params, rest = split_params(m)
    view = vae_view(graphdef, rest)(params, X)
    width = 3 if latent_type == "bernoulli" else 9
    z = view.posterior.sample(seed=jax.random.key(1), sample_shape=(2,))
    assert z.shape == (2, 3, width) and view.log_joint(z).shape == (2, 3)
    ests = [discrete.disarm, vimco] if latent_type == "bernoulli" else [discrete.straight_through]
    for est in ests:
        loss_fn = make_vae_loss(graphdef, est, num_samples=2, rest=rest, monitor=False)
        (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            params, X, jax.random.key(2)
        )
        leaves = jax.tree_util.tree_leaves(grads)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in leaves)
        assert any(np.any(g != 0) for g in leaves)


def test_baseline_and_prior():
    m = make_binary_vae(16, 4, rngs=0)
    assert m.baseline(X).shape == (3,)
    assert make_binary_vae(16, 4, rngs=0, baseline_hidden=None).baseline(X).shape == (3,)
    assert m.prior_distribution().event_shape == (4,)


def test_exact_log_marginal_matches_python_sum():
    m = make_binary_vae(16, 5, rngs=1)
    lj = m.log_joint_fn(X)
    z = jnp.asarray(np.array(np.meshgrid(*[[0.0, 1.0]] * 5, indexing="ij")).reshape(5, -1).T)
    zb = jnp.broadcast_to(z[:, None], (32, 3, 5))
    np.testing.assert_allclose(m.exact_log_marginal(X), jax.nn.logsumexp(lj(zb), axis=0), rtol=1e-5)


def test_bad_input():
    m = make_binary_vae(16, 4, rngs=0)
    with pytest.raises(ValueError, match="`x` must be binary"):
        m.posterior(X * 0.5)
    with pytest.raises(ValueError, match="would take"):
        make_binary_vae(16, 26, rngs=0).exact_log_marginal(X[:1], chunk_size=64)
    with pytest.raises(ValueError, match="`latent_type`"):
        make_binary_vae(16, 4, rngs=0, latent_type="gaussian")
    with pytest.raises(ValueError, match="`num_classes`"):
        make_binary_vae(16, 4, rngs=0, latent_type="categorical", num_classes=1)
