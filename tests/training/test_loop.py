import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_problems import (
    assert_trees_equal,
    jitter,
    linear_params,
    make_regression,
    mse_loss,
    nan_grad_at_step,
)

from vi_jax.training import (
    EpochFn,
    NonFiniteLossError,
    fit,
    init_train_state,
    make_epoch_fn,
    make_train_step,
    restore_checkpoint,
)
from vi_jax.training.epoch import _tree_all_finite
from vi_jax.types import GuardedStep

N, B = 192, 32


def _setup(lr=0.05, loss_fn=mse_loss, with_step=False):
    opt = optax.adam(lr)
    state = init_train_state(linear_params(), opt)
    return state, make_train_step(loss_fn, opt, with_step=with_step)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def test_epoch_trains_linear_regression():
    data = make_regression(n=N)
    state, step = _setup()
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N)
    assert isinstance(epoch, EpochFn) and epoch.num_steps == N // B
    losses = []
    for e in range(30):
        state, out = epoch(state, data, jax.random.key(e))
        assert out.metrics["loss"].shape == (N // B,)
        assert bool(out.all_finite)
        losses.append(float(out.metrics["loss"].mean()))
    assert losses[-1] < 0.01 * losses[0]
    assert int(state.step) == 30 * (N // B)


def test_epoch_scan_equals_python_loop_of_the_same_steps():
    data = make_regression(n=N)
    state, step = _setup()
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N, preprocess=jitter, donate=False)
    key = jax.random.key(11)
    scanned, out = epoch(state, data, key)

    # The documented key schedule, by hand, with the same (jitted) train_step.
    jstep = jax.jit(step)
    perm_key, steps_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, N)
    looped, losses = state, []
    for i in range(N // B):
        idx = perm[i * B : (i + 1) * B]
        pre_key, step_key = jax.random.split(jax.random.fold_in(steps_key, i))
        batch = jitter(pre_key, jax.tree.map(lambda x: x[idx], data))
        looped, m = jstep(looped, batch, step_key)
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(out.metrics["loss"], losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), scanned, looped
    )
    assert int(scanned.step) == int(looped.step) == N // B


def test_epoch_donates_state_unless_told_not_to():
    data = make_regression(n=N)
    state, step = _setup()
    kept, first = _copy(state), _copy(state)
    make_epoch_fn(step, batch_size=B, num_examples=N, donate=False, check="step")(
        kept, data, jax.random.key(0)
    )
    assert not kept.params["w"].is_deleted()
    make_epoch_fn(step, batch_size=B, num_examples=N, check="step")(state, data, jax.random.key(0))
    assert state.params["w"].is_deleted()
    # check="epoch" keeps its input for a rerun, so a finite epoch leaves it alive ...
    make_epoch_fn(step, batch_size=B, num_examples=N)(first, data, jax.random.key(0))
    assert not first.params["w"].is_deleted()
    # ... and the guarded rerun of a failing one donates it.
    state, step = _setup(loss_fn=_nan_at_step(2), with_step=True)
    make_epoch_fn(step, batch_size=B, num_examples=N)(state, data, jax.random.key(0))
    assert state.params["w"].is_deleted()


def test_epoch_check_rejects_unknown_values():
    _, step = _setup()
    with pytest.raises(ValueError, match="`check` must be one of"):
        make_epoch_fn(step, batch_size=B, num_examples=N, check="never")


def test_epoch_checks_agree_on_a_finite_run():
    data = make_regression(n=N)
    state, step = _setup()
    runs = {}
    for check in ("epoch", "step"):
        epoch = make_epoch_fn(step, batch_size=B, num_examples=N, preprocess=jitter, check=check)
        st, losses = _copy(state), []
        for e in range(3):
            st, out = epoch(st, data, jax.random.key(e))
            assert bool(out.all_finite) and np.asarray(out.metrics["finite"]).all()
            losses.append(np.asarray(out.metrics["loss"]))
        runs[check] = (st, np.concatenate(losses), set(out.metrics))
    (se, le, ke), (ss, ls, ks) = runs["epoch"], runs["step"]
    np.testing.assert_allclose(le, ls, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), se, ss)
    # Only the per-step check computes the gradient norm.
    assert ks == ke | {"grad_norm"} and "grad_norm" not in ke


def test_drop_remainder_false_visits_every_example_once():
    n, b = 50, 16
    data = {"i": jnp.arange(n, dtype=jnp.float32)}

    def counting_step(state, batch, key):  # a custom step on a non-TrainState state
        return state + jnp.sum(batch["i"]), {"loss": jnp.asarray(batch["i"].shape[0], float)}

    epoch = make_epoch_fn(counting_step, batch_size=b, num_examples=n, drop_remainder=False)
    assert epoch.num_steps == 4
    total, out = epoch(jnp.zeros(()), data, jax.random.key(0))
    assert float(total) == sum(range(n))
    np.testing.assert_array_equal(out.metrics["loss"], [16, 16, 16, 2])
    assert out.metrics["finite"].dtype == bool and bool(out.all_finite)

    dropped = make_epoch_fn(counting_step, batch_size=b, num_examples=n)
    total, out = dropped(jnp.zeros(()), data, jax.random.key(0))
    assert dropped.num_steps == 3 and out.metrics["loss"].shape == (3,)
    assert float(total) < sum(range(n))


def _nan_at_step(bad_step):
    def loss_fn(params, batch, key, step):
        loss, aux = mse_loss(params, batch, key)
        return jnp.where(step == bad_step, jnp.nan, loss), aux

    return loss_fn


@pytest.mark.parametrize("check", ["epoch", "step"])
def test_epoch_freezes_state_at_first_nonfinite_step(check):
    data = make_regression(n=N)
    state, step = _setup(loss_fn=_nan_at_step(2), with_step=True)
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N, check=check)
    frozen, out = epoch(state, data, jax.random.key(0))
    assert not bool(out.all_finite)
    np.testing.assert_array_equal(np.asarray(out.metrics["finite"])[:3], [True, True, False])
    assert int(frozen.step) == 2  # the state just before the bad step, never past it
    # The loop stops there: later steps do not run and say so.
    assert not np.asarray(out.metrics["finite"])[3:].any()
    assert np.isnan(np.asarray(out.metrics["loss"])[3:]).all()


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_epoch_check_finds_a_nonfinite_gradient_behind_a_finite_loss(drop_remainder):
    # The unchecked step sees only the loss; the NaN gradient reaches the state (Adam),
    # which the epoch checks at its end, and the guarded rerun stops at the bad step.
    n = N + (B // 2 if not drop_remainder else 0)
    data = make_regression(n=n)
    state, step = _setup(loss_fn=nan_grad_at_step(mse_loss, 3), with_step=True)
    out_of = {}
    for check in ("epoch", "step"):
        epoch = make_epoch_fn(
            step, batch_size=B, num_examples=n, drop_remainder=drop_remainder, check=check
        )
        out_of[check] = epoch(_copy(state), data, jax.random.key(1))
    (frozen, out), (frozen_step, out_step) = out_of["epoch"], out_of["step"]
    assert not bool(out.all_finite)
    assert int(frozen.step) == 3
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(frozen))
    finite = np.asarray(out.metrics["finite"])
    assert finite[:3].all() and not finite[3:].any()
    assert np.isnan(np.asarray(out.metrics["grad_norm"])[3])
    # The rerun is the per-step-checked program: its result, bit for bit.
    assert_trees_equal(frozen, frozen_step)
    assert_trees_equal(out.metrics, out_step.metrics)


@pytest.mark.parametrize(
    ("bad", "finite"),
    [(None, True), (1e38, True), (np.inf, False), (-np.inf, False), (np.nan, False)],
)
def test_state_check_sees_every_nonfinite_entry_and_no_overflow(bad, finite):
    tree = {
        "w": jnp.full((3, 4), 3e38, jnp.float32),  # a sum of these would overflow
        "h": jnp.ones(5, jnp.bfloat16),
        "count": jnp.asarray(7, jnp.int32),
    }
    if bad is not None:
        tree["h"] = tree["h"].at[2].set(bad)
    assert bool(jax.jit(_tree_all_finite)(tree)) is finite
    assert bool(_tree_all_finite({"n": jnp.arange(3)}))  # no float leaves: nothing to fail


def test_epoch_check_runs_the_guarded_step_only_for_a_failing_epoch():
    traced = {"fn": 0, "unchecked": 0}

    def counted(name, fn):
        def wrapped(*args):
            traced[name] += 1  # at trace time: counts the programs that contain it
            return fn(*args)

        return wrapped

    data = make_regression(n=N)
    for bad, guarded_traced in ((10**6, False), (2, True)):
        traced.update(fn=0, unchecked=0)
        state, step = _setup(loss_fn=_nan_at_step(bad), with_step=True)
        step = GuardedStep(counted("fn", step.fn), unchecked=counted("unchecked", step.unchecked))
        _, out = make_epoch_fn(step, batch_size=B, num_examples=N)(state, data, jax.random.key(0))
        assert bool(out.all_finite) is not guarded_traced
        assert traced["unchecked"] > 0 and (traced["fn"] > 0) is guarded_traced


@pytest.mark.parametrize("check", ["epoch", "step"])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_epoch_guards_a_step_that_does_not_guard_itself(drop_remainder, check):
    # A hand-written step (no `guards_nonfinite`) returns a NaN state at its fourth
    # call; the epoch must discard it and return the state of the third.
    n, b = 50, 8

    def counting_step(state, batch, key):
        bad = state["calls"] == 3
        new = {"calls": state["calls"] + 1, "w": jnp.where(bad, jnp.nan, state["w"] + 1.0)}
        return new, {"loss": jnp.where(bad, jnp.nan, 1.0)}

    data = jnp.arange(n, dtype=jnp.float32)
    state = {"calls": jnp.array(0), "w": jnp.zeros(2)}
    epoch = make_epoch_fn(
        counting_step, batch_size=b, num_examples=n, drop_remainder=drop_remainder, check=check
    )
    kept, out = epoch(state, data, jax.random.key(0))
    assert not bool(out.all_finite)
    assert int(kept["calls"]) == 3 and np.asarray(kept["w"]).tolist() == [3.0, 3.0]
    np.testing.assert_array_equal(
        np.asarray(out.metrics["finite"]), [True] * 3 + [False] * (epoch.num_steps - 3)
    )


def test_fit_trains_writes_metrics_and_calls_eval(tmp_path):
    data = make_regression(n=N)
    state, step = _setup()
    calls = []

    def eval_fn(st, epoch):
        calls.append(epoch)
        return {
            "eval_mse": jnp.mean((data["x"] @ st.params["w"] + st.params["b"] - data["y"]) ** 2)
        }

    result = fit(
        jax.random.key(0), state, step, data, num_epochs=8, batch_size=B,
        run_dir=tmp_path, checkpoint_every=3, eval_fn=eval_fn, config={"lr": 0.05},
        progress=False,
    )  # fmt: skip
    assert calls == list(range(1, 9))
    assert result.resumed_from is None and int(result.state.step) == 8 * (N // B)
    assert result.history[-1]["loss"] < 0.05 * result.history[0]["loss"]
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in lines] == list(range(1, 9))
    assert lines == result.history
    # (no "grad_norm": the default check="epoch" does not compute it; see the test below)
    assert {"epoch", "step", "loss", "abs_b", "eval_mse", "time_s"} == set(lines[0])
    assert lines[-1]["step"] == 8 * (N // B)
    # (the directory also holds the manifest marker `.vi_jax_manifests`)
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [3, 6, 8]
    ckpt = restore_checkpoint(tmp_path / "checkpoints", state)
    assert ckpt.epoch == 8 and ckpt.config["user"] == {"lr": 0.05}
    assert_trees_equal(ckpt.state, result.state)
    # The caller's state was copied, not donated.
    assert not state.params["w"].is_deleted() and int(state.step) == 0


def test_fit_with_per_step_check_records_the_gradient_norm():
    data = make_regression(n=N)
    state, step = _setup()
    key = jax.random.key(3)
    default = fit(key, state, step, data, num_epochs=2, batch_size=B, progress=False)
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N, check="step")
    checked = fit(key, state, epoch, data, num_epochs=2, progress=False)
    assert all(r["grad_norm"] > 0 for r in checked.history)
    assert not any("grad_norm" in r for r in default.history)
    for a, b in zip(default.history, checked.history, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        default.state,
        checked.state,
    )


def test_fit_nonfinite_keeps_last_good_checkpoint(tmp_path):
    data = make_regression(n=N)
    steps_per_epoch = N // B  # 6
    bad = 2 * steps_per_epoch + 1  # second step of epoch 3
    state, step = _setup(loss_fn=_nan_at_step(bad), with_step=True)
    key = jax.random.key(5)
    with pytest.raises(NonFiniteLossError) as info:
        fit(key, state, step, data, num_epochs=5, batch_size=B, run_dir=tmp_path, progress=False)
    err = info.value
    msg = str(err)
    assert f"epoch 3, step {bad + 1} (batch 2 of {steps_per_epoch}" in msg
    assert "checkpoint, at epoch 2, is kept" in msg
    assert (err.epoch, err.step, err.batch, err.checkpoint_epoch) == (3, bad + 1, 2, 2)
    assert int(err.state.step) == bad
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(err.state.params))

    # Nothing bad was saved: the latest checkpoint is epoch 2 and equals a clean 2-epoch run.
    ckpt = restore_checkpoint(tmp_path / "checkpoints", state)
    assert ckpt.epoch == 2
    clean = fit(key, state, step, data, num_epochs=2, batch_size=B, progress=False)
    assert_trees_equal(ckpt.state, clean.state)
    assert [json.loads(x)["epoch"] for x in open(tmp_path / "metrics.jsonl")] == [1, 2]


def test_fit_nonfinite_without_run_dir_says_so():
    data = make_regression(n=N)
    state, step = _setup(loss_fn=_nan_at_step(0), with_step=True)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1 .*no checkpoint"):
        fit(jax.random.key(0), state, step, data, num_epochs=1, batch_size=B, progress=False)


def test_resume_is_bit_identical(tmp_path):
    data = make_regression(n=N)
    state, step = _setup()
    key = jax.random.key(42)
    kwargs = dict(batch_size=B, preprocess=jitter, progress=False)
    full = fit(key, state, step, data, num_epochs=4, run_dir=tmp_path / "full", **kwargs)

    # Interrupt during epoch 4 (after epoch 3 was logged but only epoch 2 checkpointed).
    class Interrupt(Exception):
        pass

    def interrupt_at_4(st, epoch):
        if epoch == 4:
            raise Interrupt
        return {}

    run = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        fit(key, state, step, data, num_epochs=4, run_dir=run, checkpoint_every=2,
            eval_fn=interrupt_at_4, **kwargs)  # fmt: skip
    assert [json.loads(x)["epoch"] for x in open(run / "metrics.jsonl")] == [1, 2, 3]
    resumed = fit(key, state, step, data, num_epochs=4, run_dir=run, checkpoint_every=2, **kwargs)
    assert resumed.resumed_from == 2
    assert_trees_equal(resumed.state, full.state)
    drop_time = [{k: v for k, v in r.items() if k != "time_s"} for r in resumed.history]
    assert drop_time == [{k: v for k, v in r.items() if k != "time_s"} for r in full.history]
    assert [json.loads(x)["epoch"] for x in open(run / "metrics.jsonl")] == [1, 2, 3, 4]

    # Resuming a finished run returns its final state; another key is overridden, with a warning.
    with pytest.warns(UserWarning, match="base key"):
        again = fit(jax.random.key(0), state, step, data, num_epochs=4, run_dir=run, **kwargs)
    assert again.resumed_from == 4 and len(again.history) == 4
    assert_trees_equal(again.state, full.state)


def test_fit_accepts_an_epoch_fn():
    data = make_regression(n=N)
    state, step = _setup()
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N)
    a = fit(jax.random.key(1), state, epoch, data, num_epochs=2, progress=False)
    b = fit(jax.random.key(1), state, step, data, num_epochs=2, batch_size=B, progress=False)
    assert_trees_equal(a.state, b.state)
    with pytest.raises(ValueError, match="make_epoch_fn"):
        fit(jax.random.key(1), state, epoch, data, num_epochs=2, batch_size=B)
    with pytest.raises(ValueError, match="built for"):
        fit(jax.random.key(1), state, epoch, make_regression(n=N + 1), num_epochs=1)


def test_fit_with_progress_bar_runs(capsys):
    data = make_regression(n=64)
    state, step = _setup()
    fit(jax.random.key(0), state, step, data, num_epochs=2, batch_size=32, progress=True)
    assert "loss=" in capsys.readouterr().err


def test_refusals(tmp_path):
    data = make_regression(n=N)
    state, step = _setup()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size"):
        make_epoch_fn(step, batch_size=0, num_examples=N)
    with pytest.raises(ValueError, match="batch_size"):
        make_epoch_fn(step, batch_size=N + 1, num_examples=N)
    with pytest.raises(TypeError, match="batch_size"):
        make_epoch_fn(step, batch_size=2.0, num_examples=N)
    with pytest.raises(ValueError, match="num_examples"):
        make_epoch_fn(step, batch_size=1, num_examples=0)
    with pytest.raises(TypeError, match="preprocess"):
        make_epoch_fn(step, batch_size=B, num_examples=N, preprocess=3)
    with pytest.raises(TypeError, match="train_step"):
        make_epoch_fn(None, batch_size=B, num_examples=N)
    with pytest.raises(TypeError, match="mesh"):
        make_epoch_fn(step, batch_size=B, num_examples=N, mesh="data")
    epoch = make_epoch_fn(step, batch_size=B, num_examples=N)
    with pytest.raises(ValueError, match="built for"):
        epoch(state, make_regression(n=N - 1), key)
    with pytest.raises(ValueError, match="leading axes"):
        epoch(state, {"x": data["x"], "y": data["y"][:-1]}, key)
    with pytest.raises(TypeError, match="key"):
        epoch(state, data, 0)

    def call(**kw):
        args = dict(num_epochs=1, batch_size=B, progress=False)
        args.update(kw)
        return fit(
            args.pop("key", key), state, args.pop("step", step), args.pop("data", data), **args
        )

    with pytest.raises(ValueError, match="num_epochs"):
        call(num_epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        call(batch_size=None)
    with pytest.raises(ValueError, match="batch_size"):
        call(batch_size=N + 1)
    with pytest.raises(ValueError, match="checkpoint_every"):
        call(checkpoint_every=0)
    with pytest.raises(ValueError, match="max_to_keep"):
        call(max_to_keep=0)
    with pytest.raises(ValueError, match="leading axes"):
        call(data={"x": data["x"], "y": data["y"][:5]})
    with pytest.raises(ValueError, match="scalar"):
        call(data={"x": data["x"], "c": jnp.ones(())})
    with pytest.raises(ValueError, match="data"):
        call(data={})
    with pytest.raises(ValueError, match=r"`data\['x'\]` has non-finite"):
        call(data={"x": data["x"].at[3, 1].set(jnp.inf), "y": data["y"]})
    with pytest.raises(TypeError, match="config"):
        call(config={"f": object()})
    with pytest.raises(TypeError, match="eval_fn"):
        call(eval_fn=1)
    with pytest.raises(ValueError, match="eval_loss"):
        call(eval_fn=lambda s, e: {"loss": 0.0})
    with pytest.raises(TypeError, match="key"):
        call(key="seed")
    with pytest.raises(TypeError, match="train_step"):
        call(step=None)
    bad_metrics = lambda s, b, k: (s, {"no_loss": jnp.zeros(())})  # noqa: E731
    with pytest.raises(TypeError, match="loss"):
        call(step=bad_metrics)


def test_resume_tolerates_a_cut_line_and_warns_on_changed_settings(tmp_path):
    data = make_regression(n=64)
    state, step = _setup()
    key = jax.random.key(0)
    fit(key, state, step, data, num_epochs=1, batch_size=32, run_dir=tmp_path, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lo')  # a run killed while writing epoch 2's line
    with pytest.warns(UserWarning) as record:
        out = fit(key, state, step, data, num_epochs=2, batch_size=16, run_dir=tmp_path,
                  progress=False)  # fmt: skip
    messages = " ".join(str(w.message) for w in record)
    assert "unreadable line 2" in messages and "batch_size" in messages
    assert out.resumed_from == 1 and [r["epoch"] for r in out.history] == [1, 2]
    assert [json.loads(x)["epoch"] for x in open(tmp_path / "metrics.jsonl")] == [1, 2]
