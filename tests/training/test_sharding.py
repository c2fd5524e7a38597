import json
import os
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

from vi_jax.training import make_data_mesh, replicate, shard_batch
from vi_jax.training.sharding import check_mesh, data_parallel_size

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def eight_devices():
    """Runs the 8-device comparison once in a subprocess (XLA_FLAGS must precede jax)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "sharded_fit_script.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_eight_devices_match_one_device(eight_devices):
    out = eight_devices
    assert out["num_devices"] == 8
    # A 1-device mesh is the unsharded program; 8 devices differ only by summation order.
    assert out["max_param_diff_one"] < 1e-6
    assert out["max_param_diff_eight"] < 1e-4
    assert out["loss_eight"][-1] < 0.5 * out["loss_eight"][0]
    assert out["final_step_eight"] == 3 * 256 // 32
    assert out["params_sharding_eight"] == str(P()) and out["params_devices_eight"] == 8
    assert out["has_all_reduce"]
    nan_grad = out["nan_grad"]  # check="epoch" under the 8-device mesh
    assert nan_grad["all_finite"] == [False, False] and nan_grad["steps"] == [3, 3]
    assert nan_grad["finite"] == [True] * 3 + [False] * 5
    assert nan_grad["states_equal"]


def test_eight_devices_refusals(eight_devices):
    refusals = eight_devices["refusals"]
    assert "`batch_size` (12) must be divisible by the number of devices" in refusals["batch"]
    assert "num_examples % batch_size" in refusals["remainder"]
    assert "`batch_size` (20)" in refusals["fit"]
    assert "divisible" in refusals["shard_batch"]
    assert eight_devices["shard_batch_shards"] == 8
    assert eight_devices["shard_batch_shard_shape"] == [2, 2]


def test_single_device_helpers():
    mesh = make_data_mesh()
    assert mesh.axis_names == ("data",) and data_parallel_size(mesh) == jax.device_count()
    assert data_parallel_size(None) == 1
    x = replicate({"a": jax.numpy.ones(3)}, mesh)["a"]
    assert x.sharding.spec == P()
    y = shard_batch({"a": jax.numpy.ones((4, 2))}, mesh)["a"]
    assert y.sharding.spec == P("data")
    assert replicate({"a": 1.0})["a"].shape == ()
    # An explicit-axis mesh (the jax.make_mesh default) is accepted and rebuilt as Auto.
    explicit = jax.make_mesh((1,), ("data",))
    assert all(t == jax.sharding.AxisType.Auto for t in check_mesh(explicit).axis_types)


def test_mesh_refusals():
    with pytest.raises(ValueError, match="num_devices"):
        make_data_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="num_devices"):
        make_data_mesh(0)
    with pytest.raises(ValueError, match="'data'"):
        check_mesh(jax.make_mesh((1,), ("batch",)))
    with pytest.raises(TypeError, match="mesh"):
        check_mesh(object())
    with pytest.raises(ValueError, match="scalar"):
        shard_batch({"a": jax.numpy.ones(())}, make_data_mesh(1))
