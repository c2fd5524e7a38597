"""`iwae_table --parallel-cells`: the scheduler that runs one cell per device."""

import sys

import pytest

from benchmarks import iwae_table

CHILD = """
import glob, os, sys, time
d, i, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(os.path.join(d, "run" + i), "w").close()
running = len(glob.glob(os.path.join(d, "run*")))
open(os.path.join(d, "started" + i), "w").close()
met = True
if i in ("0", "1"):  # a rendezvous: each waits for the other, possible only if concurrent
    other = os.path.join(d, "started" + ("1" if i == "0" else "0"))
    deadline = time.time() + 60
    while not os.path.exists(other) and time.time() < deadline:
        time.sleep(0.01)
    met = os.path.exists(other)
open(os.path.join(d, "out" + i), "w").write(f"{os.environ['CUDA_VISIBLE_DEVICES']} {running} {met}")
os.remove(os.path.join(d, "run" + i))
sys.exit(rc)
"""


def test_run_concurrently_one_command_per_slot(tmp_path):
    commands = [
        [sys.executable, "-c", CHILD, str(tmp_path), str(i), "1" if i == 2 else "0"]
        for i in range(4)
    ]
    assert iwae_table.run_concurrently(commands, 2) == [0, 0, 1, 0]
    outs = [(tmp_path / f"out{i}").read_text().split() for i in range(4)]
    assert [o[0] for o in outs[:2]] == ["0", "1"]  # one device per slot
    assert {o[0] for o in outs} == {"0", "1"}
    assert all(int(o[1]) <= 2 for o in outs)  # never more than 2 at once
    assert outs[0][2] == outs[1][2] == "True"  # the first two ran concurrently


def test_parallel_cells_refusals():
    with pytest.raises(ValueError, match="`num_slots`"):
        iwae_table.run_concurrently([], 0)
    with pytest.raises(SystemExit):
        iwae_table.main(["--parallel-cells", "-1"])
