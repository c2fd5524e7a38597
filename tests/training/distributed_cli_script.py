"""One process with 4 simulated CPU devices: the reference for test_distributed.py.

Run as `python distributed_cli_script.py OUT TRAIN_ARGS...`; prints one JSON line.
XLA_FLAGS must be set before jax is imported, hence a separate process.
"""

import contextlib
import io
import json
import os
import shutil
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

from vi_jax import cli  # noqa: E402


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def main():
    out_dir, train_args = sys.argv[1], sys.argv[2:]
    report = {}
    # 4 devices do not divide a batch of 50.
    bad = [a if a != "100" else "50" for a in train_args]
    rc, _, err = run(["train", *bad, "--devices", "4", "--out", out_dir + "-bad"])
    report["bad_batch"] = {"rc": rc, "stderr": err}
    rc, stdout, err = run(["train", *train_args, "--devices", "4", "--out", out_dir])
    report["train"] = {"rc": rc, "stdout": stdout, "stderr": err[-2000:]}
    for devices in ("4", "1"):
        rc, _, err = run(["evaluate", "--run", out_dir, "--no-progress", "--devices", devices])
        shutil.copy(
            os.path.join(out_dir, "evaluation_log_likelihood.npy"),
            os.path.join(out_dir, f"ll_devices{devices}.npy"),
        )
        report[f"evaluate{devices}"] = {"rc": rc, "stderr": err[-2000:]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
