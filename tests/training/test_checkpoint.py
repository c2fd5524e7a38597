import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_problems import assert_trees_equal

from vi_jax.training import (
    Checkpointer,
    init_train_state,
    latest_epoch,
    restore_checkpoint,
    save_checkpoint,
)


def _state(seed=0):
    params = {"w": jax.random.normal(jax.random.key(seed), (4, 3)), "b": [jnp.zeros(3)]}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    state = init_train_state(params, opt)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, opt_state = opt.update(grads, state.opt_state, params)
    return state._replace(
        params=optax.apply_updates(params, updates), opt_state=opt_state, step=state.step + 7
    )


def test_roundtrip_is_exact(tmp_path):
    state = _state()
    key = jax.random.key(123)
    save_checkpoint(tmp_path, 3, state, key, config={"lr": 1e-3, "layers": [4, 3]})
    template = _state(seed=1)  # same structure, other values
    ckpt = restore_checkpoint(tmp_path, template)
    assert ckpt.epoch == 3 and ckpt.config == {"lr": 1e-3, "layers": [4, 3]}
    assert_trees_equal(ckpt.state, state)
    assert type(ckpt.state) is type(state) and ckpt.state.step.dtype == jnp.int32
    assert jnp.issubdtype(ckpt.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(key))
    # The restored key produces the same randomness.
    np.testing.assert_array_equal(jax.random.normal(ckpt.key, (3,)), jax.random.normal(key, (3,)))


def test_restore_onto_abstract_template_and_raw_key(tmp_path):
    state = _state()
    save_checkpoint(tmp_path, 0, state, jax.random.PRNGKey(9))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    ckpt = restore_checkpoint(tmp_path, abstract)
    assert_trees_equal(ckpt.state, state)
    np.testing.assert_array_equal(jax.random.key_data(ckpt.key), jax.random.PRNGKey(9))
    assert ckpt.config == {}


def test_max_to_keep_and_latest(tmp_path):
    state = _state()
    assert latest_epoch(tmp_path / "absent") is None
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        assert ckpt.latest_epoch() is None
        for epoch in (1, 2, 3):
            ckpt.save(epoch, jax.tree.map(lambda x: x + epoch, state), jax.random.key(0))
        assert ckpt.epochs() == [2, 3] and ckpt.latest_epoch() == 3
        older = ckpt.restore(state, epoch=2)
        assert_trees_equal(older.state, jax.tree.map(lambda x: x + 2, state))
        with pytest.raises(ValueError, match="already has a checkpoint"):
            ckpt.save(3, state, jax.random.key(0))
        with pytest.raises(FileNotFoundError, match="epoch"):
            ckpt.restore(state, epoch=1)
    assert latest_epoch(tmp_path) == 3


def test_refusals(tmp_path):
    state = _state()
    with pytest.raises(FileNotFoundError):
        restore_checkpoint(tmp_path / "nothing", state)
    with Checkpointer(tmp_path / "empty") as ckpt, pytest.raises(FileNotFoundError):
        ckpt.restore(state)
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=0)
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="epoch"):
            ckpt.save(-1, state, jax.random.key(0))
        with pytest.raises(TypeError, match="key"):
            ckpt.save(0, state, 5)
        with pytest.raises(TypeError, match="config"):
            ckpt.save(0, state, jax.random.key(0), config={"x": jnp.ones(2)})
        assert ckpt.epochs() == []


def test_manifest_is_written_last_and_verified_on_restore(tmp_path):
    from vi_jax.training import CheckpointCorruptError
    from vi_jax.training.checkpoint import MANIFEST_NAME, verify_checkpoint

    state = _state()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, jax.random.key(0))
        ckpt.save(2, jax.tree.map(lambda x: x + 1, state), jax.random.key(0))
        step = tmp_path / "2"
        manifest = (step / MANIFEST_NAME).read_text()
        assert '"sha256"' in manifest and "_METADATA" in manifest
        assert verify_checkpoint(str(step)) is None
        (step / "meta" / "metadata").write_text("{}")
        with pytest.raises(CheckpointCorruptError, match="meta/metadata"):
            ckpt.restore(state)  # an explicit restore refuses, naming the file
        with pytest.warns(UserWarning, match="epoch 2 .* corrupt .*moved aside"):
            restored = ckpt.restore_latest_intact(state)  # the fallback sets it aside
        assert restored.epoch == 1 and ckpt.epochs() == [1]
        assert_trees_equal(restored.state, state)
    assert (tmp_path.parent / (tmp_path.name + ".corrupt") / "2" / "meta" / "metadata").exists()


def test_checkpoints_without_manifests_restore_unverified_with_a_warning(tmp_path):
    from vi_jax.training.checkpoint import _MARKER_NAME, MANIFEST_NAME

    state = _state()
    save_checkpoint(tmp_path, 1, state, jax.random.key(0))
    # As written by an older vi_jax: no marker, no manifest.
    (tmp_path / _MARKER_NAME).unlink()
    (tmp_path / "1" / MANIFEST_NAME).unlink()
    with pytest.warns(UserWarning, match="no checksum manifest"):
        ckpt = restore_checkpoint(tmp_path, state)
    assert_trees_equal(ckpt.state, state)
