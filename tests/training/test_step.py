import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_problems import assert_trees_equal, linear_params, make_regression, mse_loss

from vi_jax.training import (
    TrainState,
    apply_if,
    init_train_state,
    make_train_step,
    tree_select,
)
from vi_jax.types import GuardedStep, Loss


def test_step_matches_manual_sgd_under_jit():
    data = make_regression(n=32)
    opt = optax.sgd(0.1)
    state = init_train_state(linear_params(), opt)
    step = jax.jit(make_train_step(mse_loss, opt))
    key = jax.random.key(3)
    new_state, metrics = step(state, data, key)

    grads = jax.grad(lambda p: mse_loss(p, data, key)[0])(state.params)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new_state.params, expected
    )
    assert int(new_state.step) == 1
    assert set(metrics) == {"loss", "abs_b", "grad_norm", "finite"}
    assert all(jnp.ndim(v) == 0 for v in metrics.values())
    assert bool(metrics["finite"])
    np.testing.assert_allclose(metrics["loss"], mse_loss(state.params, data, key)[0], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)


def test_steps_decrease_loss():
    data = make_regression(n=64)
    opt = optax.adam(0.1)
    state = init_train_state(linear_params(), opt)
    step = jax.jit(make_train_step(mse_loss, opt))
    first = None
    for i in range(150):
        state, metrics = step(state, data, jax.random.key(i))
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.01 * first


def test_with_step_passes_the_step_counter():
    def loss_fn(params, batch, key, step):
        warmup = jnp.minimum(1.0, step / 4.0)
        return warmup * jnp.sum(params["w"] ** 2), {"seen_step": step.astype(jnp.float32)}

    opt = optax.sgd(0.1)
    state = init_train_state({"w": jnp.ones(2)}, opt)
    step = jax.jit(make_train_step(loss_fn, opt, with_step=True))
    seen = []
    for _ in range(3):
        state, metrics = step(state, None, jax.random.key(0))
        seen.append(float(metrics["seen_step"]))
    assert seen == [0.0, 1.0, 2.0]


def test_nonfinite_loss_leaves_state_unchanged():
    def loss_fn(params, batch, key):
        loss = jnp.sum(params["w"] ** 2)
        return jnp.where(batch["bad"], jnp.nan, loss), {}

    opt = optax.adam(0.1)
    state = init_train_state({"w": jnp.ones(3)}, opt)
    step = jax.jit(make_train_step(loss_fn, opt))
    state, metrics = step(state, {"bad": False}, jax.random.key(0))
    assert bool(metrics["finite"]) and int(state.step) == 1
    bad_state, metrics = step(state, {"bad": True}, jax.random.key(1))
    assert not bool(metrics["finite"])
    assert np.isnan(float(metrics["loss"]))
    assert_trees_equal(bad_state, state)


def test_nonfinite_gradient_with_finite_loss_is_caught():
    # sqrt(|w|^2) at w = 0: the loss is 0 but its gradient is 0/0 = NaN.
    def loss_fn(params, batch, key):
        return jnp.sqrt(jnp.sum(params["w"] ** 2)), {}

    opt = optax.sgd(0.1)
    state = init_train_state({"w": jnp.zeros(2)}, opt)
    new_state, metrics = jax.jit(make_train_step(loss_fn, opt))(state, None, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and not np.isfinite(float(metrics["grad_norm"]))
    assert not bool(metrics["finite"])
    assert_trees_equal(new_state, state)


def test_tree_select():
    a = TrainState({"w": jnp.ones(2)}, (), jnp.array(3, jnp.int32))
    b = TrainState({"w": jnp.zeros(2)}, (), jnp.array(4, jnp.int32))
    assert_trees_equal(jax.jit(tree_select)(jnp.array(True), a, b), a)
    assert_trees_equal(tree_select(jnp.array(False), a, b), b)


@pytest.mark.parametrize("guard", ["cond", "select"])
def test_apply_if_both_lowerings(guard):
    a = {"w": jnp.arange(3.0), "n": jnp.array(2, jnp.int32)}

    def fn(t):
        return {"w": t["w"] * 2.0, "n": t["n"] + 1}

    run = jax.jit(lambda p, t: apply_if(p, fn, t, guard))
    assert_trees_equal(run(jnp.array(True), a), fn(a))
    assert_trees_equal(run(jnp.array(False), a), a)


@pytest.mark.parametrize("guard", ["cond", "select"])
def test_apply_if_vmap_and_grad(guard):
    preds = jnp.array([True, False, True])
    w = jnp.arange(3.0)

    def f(p, w):
        return apply_if(p, lambda t: t**2, w, guard)

    # vmap over the predicate and the state (lax.cond becomes a select under vmap).
    np.testing.assert_array_equal(jax.vmap(f)(preds, w), jnp.where(preds, w**2, w))
    # The gradient follows the branch taken: 2w where pred holds, 1 where it does not.
    g = jax.vmap(jax.grad(f, argnums=1))(preds, w)
    np.testing.assert_array_equal(g, jnp.where(preds, 2 * w, 1.0))


def test_guards_give_identical_training_and_identical_refusal():
    # Adam on a loss that is NaN on the third step: the two lowerings of the guard
    # must give the same states bit for bit, including the state kept at the bad step.
    def loss_fn(params, batch, key, step):
        loss = jnp.sum((params["w"] - batch) ** 2) + 0.1 * jax.random.normal(key)
        return jnp.where(step == 2, jnp.nan, loss), {}

    opt = optax.adam(0.1)
    finals = []
    for guard in ("cond", "select", "auto"):
        raw = make_train_step(loss_fn, opt, with_step=True, guard=guard)
        assert isinstance(raw, GuardedStep)
        step = jax.jit(raw)
        state = init_train_state({"w": jnp.zeros(4)}, opt)
        states = []
        for i in range(3):
            state, m = step(state, jnp.arange(4.0), jax.random.key(i))
            states.append(state)
        assert not bool(m["finite"])
        assert_trees_equal(states[2], states[1])
        finals.append(states)
    for other in finals[1:]:
        assert_trees_equal(other, finals[0])


def test_refusals():
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="guard"):
        make_train_step(mse_loss, opt, guard="where")
    with pytest.raises(ValueError, match="guard"):
        apply_if(jnp.array(True), lambda t: t, {}, "where")
    with pytest.raises(TypeError, match="loss_fn"):
        make_train_step("not a function", opt)
    with pytest.raises(TypeError, match="optimizer"):
        make_train_step(mse_loss, None)
    with pytest.raises(TypeError, match="with_step"):
        make_train_step(mse_loss, opt, with_step=1)

    state = init_train_state({"w": jnp.ones(2)}, opt)
    cases = [
        (lambda p, b, k: (jnp.sum(p["w"]), {"loss": 1.0}), ValueError, "reserved"),
        (lambda p, b, k: (jnp.sum(p["w"]), {"v": p["w"]}), ValueError, "scalar"),
        (lambda p, b, k: (p["w"], {}), ValueError, "scalar loss"),
        (lambda p, b, k: jnp.sum(p["w"]), TypeError, r"\(loss, aux\)"),
        (lambda p, b, k: (jnp.sum(p["w"]), [1.0]), TypeError, "aux"),
    ]
    for loss_fn, err, match in cases:
        with pytest.raises(err, match=match):
            make_train_step(loss_fn, opt)(state, None, jax.random.key(0))


def test_aux_none_is_allowed():
    opt = optax.sgd(0.1)
    state = init_train_state({"w": jnp.ones(2)}, opt)
    step = make_train_step(lambda p, b, k: (jnp.sum(p["w"] ** 2), None), opt)
    _, metrics = step(state, None, jax.random.key(0))
    assert set(metrics) == {"loss", "grad_norm", "finite"}


def test_a_loss_declares_whether_it_takes_the_step():
    # A `Loss(fn, takes_step=True)` gets `state.step` without `with_step`; a `with_step`
    # that contradicts it is refused, naming the argument.
    def fn(params, batch, key, step):
        return jnp.sum(params["w"] ** 2) * step, {}

    opt = optax.sgd(0.1)
    state = init_train_state({"w": jnp.ones(2)}, opt)
    state = state._replace(step=jnp.asarray(3, jnp.int32))
    _, m = jax.jit(make_train_step(Loss(fn, takes_step=True), opt))(state, None, jax.random.key(0))
    np.testing.assert_allclose(m["loss"], 6.0)
    with pytest.raises(ValueError, match="with_step"):
        make_train_step(Loss(fn, takes_step=True), opt, with_step=False)
