import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vi_jax.estimators import bounds, gradients
from vi_jax.models import batch_data, make_mlp_vae, make_vae_loss, merge_params, split_params

DATA, LATENT, HIDDEN = 64, 2, (16,)


def local_pathwise(key, log_joint, q, num_samples):
    """Reference pathwise ELBO surrogate, independent of vi_jax.estimators."""
    z = q.sample(seed=key, sample_shape=(num_samples,))
    return jnp.mean(log_joint(z) - q.log_prob(z), axis=0)


def _x(batch=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((batch, DATA)) < 0.5, jnp.float32)


@pytest.fixture(scope="module")
def model():
    vae = make_mlp_vae(DATA, LATENT, HIDDEN, "tanh", rngs=nnx.Rngs(0))
    return split_params(vae)


@pytest.fixture(scope="module")
def local_loss(model):
    """`make_vae_loss(graphdef, local_pathwise, num_samples=3)` and its jitted version."""
    graphdef, _, rest = model
    loss_fn = make_vae_loss(graphdef, local_pathwise, num_samples=3, rest=rest)
    return loss_fn, jax.jit(loss_fn)


@pytest.fixture(scope="module")
def laplace_model():
    vae = make_mlp_vae(DATA, LATENT, HIDDEN, "tanh", prior="laplace", rngs=nnx.Rngs(0))
    return split_params(vae)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _by_hand(graphdef, params, x, key, k):
    """On the estimator's draws z = q.sample(seed=key, (K,)): the bound, recon, KLs [B]."""
    vae = merge_params(graphdef, params)
    q = vae.posterior(x)
    z = q.sample(seed=key, sample_shape=(k,))
    log_lik = vae.log_likelihood_fn(x)(z)
    prior = vae.prior_distribution()
    log_q, log_p = q.log_prob(z), prior.log_prob(z)
    return {
        "bound": jnp.mean(log_lik + log_p - log_q, 0),
        "recon": jnp.mean(log_lik, 0),
        "kl_mc": jnp.mean(log_q - log_p, 0),
        "kl_exact": q.kl_divergence(prior) if k == 3 else jnp.zeros(x.shape[0]),
    }


def test_value_and_aux(model, local_loss, key):
    graphdef, params, rest = model
    x = _x()
    loss_fn, jitted = local_loss
    assert loss_fn.takes_step is False
    loss, aux = jitted(params, x, key)
    ref = _by_hand(graphdef, params, x, key, 3)
    np.testing.assert_allclose(loss, -jnp.mean(ref["bound"]), rtol=1e-5)
    np.testing.assert_allclose(aux["bound"], -loss, rtol=1e-6)
    np.testing.assert_allclose(aux["recon"], jnp.mean(ref["recon"]), rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], jnp.mean(ref["kl_exact"]), rtol=1e-5)
    # the real estimator draws the same samples from the same key
    loss2, _ = jax.jit(make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=3))(
        params, x, key
    )
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)


def test_monte_carlo_kl_for_laplace_prior(laplace_model, key):
    graphdef, params, _ = laplace_model
    x = _x()
    _, aux = jax.jit(make_vae_loss(graphdef, local_pathwise, num_samples=4))(params, x, key)
    ref = _by_hand(graphdef, params, x, key, 4)
    np.testing.assert_allclose(aux["kl"], jnp.mean(ref["kl_mc"]), rtol=1e-5)
    np.testing.assert_allclose(aux["recon"], jnp.mean(ref["recon"]), rtol=1e-5)
    np.testing.assert_allclose(aux["recon"] - aux["kl"], aux["bound"], rtol=1e-5)


def test_batch_forms():
    x = _x()
    assert batch_data({"x": x}) is x
    assert batch_data([x]) is x
    assert batch_data(x) is x
    with pytest.raises(ValueError, match="'x'"):
        batch_data({"image": x})
    with pytest.raises(ValueError, match="`batch`"):
        batch_data(())


def test_jit_vmap_grad(model, local_loss, key):
    _, params, _ = model
    x = _x()
    loss_fn, jitted = local_loss
    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, x, key)
    np.testing.assert_allclose(loss, jitted(params, x, key)[0], rtol=1e-5)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0))
    keys = jax.random.split(key, 3)
    losses, auxs = jax.jit(jax.vmap(loss_fn, in_axes=(None, None, 0)))(params, x, keys)
    assert losses.shape == (3,) and auxs["kl"].shape == (3,)
    np.testing.assert_allclose(losses[1], jitted(params, x, keys[1])[0], rtol=1e-5)


def test_monitoring_shares_the_forward_pass(model, key):
    graphdef, params, _ = model
    batch, k = 32, 2
    x = _x(batch)
    flops = []
    for monitor in (False, True):
        loss_fn = make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=k, monitor=monitor)
        step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        cost = step.lower(params, x, key).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops.append(cost["flops"])
    # The monitor repeats the estimator's forward pass (same key, same z) and XLA merges
    # it: the decoder's matmuls (2 * 16 * 64 = 2048 flops per [k, b] row, 32 per pixel)
    # are not recomputed; only a few elementwise flops per pixel may be (the softplus
    # of log p(x|z), whose primal JAX writes differently under differentiation).
    extra_per_pixel = (flops[1] - flops[0]) / (k * batch * DATA)
    assert extra_per_pixel < 10.0, flops


def test_kl_weight_and_warmup(model, key):
    graphdef, params, _ = model
    x = _x()
    k = 2
    plain = make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=k)
    warm = make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=k, kl_warmup_steps=10)
    assert warm.takes_step is True
    ref = _by_hand(graphdef, params, x, key, k)
    recon, kl_same_draws = ref["recon"], ref["kl_mc"]
    grad_fn = jax.jit(jax.value_and_grad(warm, has_aux=True))
    (l0, aux0), _ = grad_fn(params, x, key, 0)
    np.testing.assert_allclose(aux0["beta"], 0.0)
    np.testing.assert_allclose(l0, -jnp.mean(recon), rtol=1e-5)
    (l5, aux5), _ = grad_fn(params, x, key, jnp.asarray(5))
    np.testing.assert_allclose(aux5["beta"], 0.5)
    np.testing.assert_allclose(l5, -jnp.mean(recon - 0.5 * kl_same_draws), rtol=1e-5)
    (lp, _), gp = jax.jit(jax.value_and_grad(plain, has_aux=True))(params, x, key)
    for step in (10, 25):
        (lw, auxw), gw = grad_fn(params, x, key, step)
        np.testing.assert_allclose(auxw["beta"], 1.0)
        np.testing.assert_allclose(lw, lp, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(gw), jax.tree.leaves(gp), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    half = make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=k, beta=0.5)
    assert half.takes_step is False
    np.testing.assert_allclose(jax.jit(half)(params, x, key)[0], l5, rtol=1e-5)
    sched = make_vae_loss(graphdef, gradients.elbo_pathwise, num_samples=k, beta=lambda s: 0.5)
    assert sched.takes_step is True
    np.testing.assert_allclose(jax.jit(sched)(params, x, key, 123)[0], l5, rtol=1e-5)


def test_refusals(model):
    graphdef, params, rest = model
    vae = merge_params(graphdef, params, rest)
    with pytest.raises(TypeError, match="`graphdef`"):
        make_vae_loss(vae, local_pathwise)
    with pytest.raises(TypeError, match="`estimator`"):
        make_vae_loss(graphdef, "elbo")
    with pytest.raises(ValueError, match="`num_samples`"):
        make_vae_loss(graphdef, local_pathwise, num_samples=0)
    with pytest.raises(ValueError, match="`beta`"):
        make_vae_loss(graphdef, local_pathwise, beta=-1.0)
    with pytest.raises(ValueError, match="`kl_warmup_steps`"):
        make_vae_loss(graphdef, local_pathwise, kl_warmup_steps=0)
    with pytest.raises(ValueError, match="`beta`"):
        make_vae_loss(graphdef, local_pathwise, beta=lambda s: 1.0, kl_warmup_steps=5)
    bad = make_vae_loss(graphdef, lambda key, lj, q, k: jnp.zeros(()))
    with pytest.raises(ValueError, match="`estimator`"):
        bad(params, _x(), jax.random.key(0))
    with pytest.raises(ValueError, match="`x`"):
        make_vae_loss(graphdef, local_pathwise)(params, jnp.ones((3, 5)), jax.random.key(0))


# ----------------------------------------------------------------------------- training


@functools.partial(jax.jit, static_argnums=0)
def _elbo(graphdef, params, x, key):
    """Mean 16-sample ELBO estimate over the data (a fixed key: comparable values)."""
    vae = merge_params(graphdef, params)
    return jnp.mean(local_pathwise(key, vae.log_joint_fn(x), vae.posterior(x), 16))


def _train(loss_fn, params, x, steps=300, lr=1e-2):
    opt = optax.adam(lr)

    def body(carry, i):
        params, state = carry
        key = jax.random.fold_in(jax.random.key(1), i)
        args = (params, x, key, i) if loss_fn.takes_step else (params, x, key)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(*args)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), aux["bound"]

    run = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), jnp.arange(steps)))
    (params, _), bounds_ = run(params)
    return params, bounds_


# Bounds differentiated directly (ELBO, IWAE) and the gradient estimators, unchanged.
ESTIMATORS = {
    "elbo": (bounds.elbo, 1, {}),
    "iwae_bound": (bounds.iwae_bound, 4, {}),
    "elbo_pathwise": (gradients.elbo_pathwise, 1, {}),
    "elbo_stl": (gradients.elbo_stl, 2, {}),
    "iwae_dreg": (gradients.iwae_dreg, 4, {}),
    "elbo_pathwise+warmup": (gradients.elbo_pathwise, 1, {"kl_warmup_steps": 100}),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_training_increases_elbo(name, binary_patterns):
    estimator, k, options = ESTIMATORS[name]
    vae = make_mlp_vae(DATA, LATENT, HIDDEN, "tanh", rngs=nnx.Rngs(0))
    graphdef, params, _ = split_params(vae)
    x = binary_patterns
    loss_fn = make_vae_loss(graphdef, estimator, num_samples=k, **options)
    eval_key = jax.random.key(123)
    before = float(_elbo(graphdef, params, x, eval_key))
    params, trace = _train(loss_fn, params, x)
    after = float(_elbo(graphdef, params, x, eval_key))
    # random init: ~ -64 log 2 = -44 nats; the 4 noisy prototypes allow ~ -15.
    assert before < -40.0
    assert after > before + 15.0, (before, after)
    assert bool(jnp.all(jnp.isfinite(trace)))
    assert float(jnp.mean(trace[-20:])) > float(jnp.mean(trace[:20])) + 10.0


def test_sample_chunk_changes_nothing_but_the_loop(model, key):
    graphdef, params, rest = model
    x = _x(6)
    outs = []
    for chunk in (None, 2, 3, "auto"):
        loss_fn = make_vae_loss(
            graphdef, gradients.iwae_pathwise, num_samples=7, rest=rest, sample_chunk=chunk
        )
        (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, x, key)
        outs.append((loss, grads, aux))
    for loss, grads, aux in outs[1:]:
        np.testing.assert_allclose(loss, outs[0][0], rtol=1e-6)
        for name in ("recon", "kl", "bound"):  # the monitor sees the same samples, chunked
            np.testing.assert_allclose(aux[name], outs[0][2][name], rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, outs[0][1]
        )
    # A chunk of 2 is a lax.map over 3 chunks (and one more call for the last sample).
    loss_fn = make_vae_loss(graphdef, gradients.iwae_pathwise, num_samples=7, sample_chunk=2)
    text = jax.jit(loss_fn).lower(params, x, key).as_text()
    assert "while" in text
    for bad in (0, -1, "big"):
        with pytest.raises(ValueError, match="sample_chunk"):
            make_vae_loss(graphdef, gradients.iwae_pathwise, num_samples=7, sample_chunk=bad)
