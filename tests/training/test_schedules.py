import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vi_jax.training import burda_num_epochs, burda_schedule


def test_burda_schedule_stages_and_rates():
    steps = 7  # steps per epoch
    sched = burda_schedule(1e-3, steps)
    assert burda_num_epochs() == 3280
    # Stage i covers epochs [sum_{j<i} 3^j, sum_{j<=i} 3^j): its first and last step.
    start = 0
    for i in range(8):
        end = start + 3**i * steps
        for count in (start, end - 1):
            np.testing.assert_allclose(float(sched(count)), 1e-3 * 10 ** (-i / 7), rtol=1e-6)
        start = end
    assert start == 3280 * steps
    np.testing.assert_allclose(float(sched(10 * start)), 1e-4, rtol=1e-6)  # stays at the last
    # jit and vmap over step counts give the same rates as the eager calls.
    counts = jnp.array([0, steps - 1, steps, 4 * steps, 3280 * steps])
    expected = [float(sched(int(c))) for c in counts]
    np.testing.assert_allclose(jax.jit(jax.vmap(sched))(counts), expected, rtol=1e-7)
    # Usable by optax under jit, as a function of the optimiser's own step count.
    opt = optax.adam(sched, eps=1e-4)
    state = opt.init({"w": jnp.zeros(2)})
    updates, _ = opt.update({"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 / (1 + 1e-4), rtol=1e-5)


def test_burda_schedule_refusals():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        burda_schedule(1e-3, 0)
    with pytest.raises(ValueError, match="learning_rate"):
        burda_schedule(-1.0, 10)
    with pytest.raises(ValueError, match="num_stages"):
        burda_num_epochs(0)
