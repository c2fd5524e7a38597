import jax
import jax.numpy as jnp
import optax
import pytest

from vi_jax.training import TrainState, init_train_state


def test_init_train_state_structure():
    params = {"w": jnp.ones((2, 3)), "b": [jnp.zeros(3)]}
    opt = optax.adam(1e-3)
    state = init_train_state(params, opt)
    assert isinstance(state, TrainState)
    assert state.step.shape == () and state.step.dtype == jnp.int32 and int(state.step) == 0
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(opt.init(params))


def test_init_train_state_accepts_numpy_and_is_a_pytree():
    import numpy as np

    state = init_train_state({"w": np.ones(3, np.float32)}, optax.sgd(0.1))
    assert isinstance(state.params["w"], jax.Array)
    doubled = jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s))(state)
    assert isinstance(doubled, TrainState)


def test_init_train_state_refuses_non_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        init_train_state({"w": jnp.ones(3)}, "adam")
