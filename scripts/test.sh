#!/usr/bin/env bash
# The test command: sets up .venv, then runs the whole suite on the CPU, and the
# estimator core's numerical tests (enumeration, importance
# sampling, weights, bounds) a second time in float64; then the static type check, the documentation
# site (from the notebooks the suite has just executed: they run once) and the packaging
# check (wheel + sdist, the README example from the installed wheel). Extra arguments go
# to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh" dev,notebooks,docs
cd "$root"
export JAX_PLATFORMS=cpu VI_JAX_OFFLINE="${VI_JAX_OFFLINE:-}"
# JAX's persistent compilation cache, shared by the pytest workers, the CLI subprocesses
# and the notebook kernels: a program compiled by one of them is read back by the others
# (measured: -12% CPU on the fault-injection and distributed tests, whose processes
# compile the same training program).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$root/build/jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}"
# The suite is mostly XLA compile time: CPU code generation without LLVM's optimisation
# passes cut it by a third (tests/families + tests/inference/test_ais.py: 135 -> 86 CPU s,
# same results). The computation (the HLO and its fusions) is unchanged; only the machine
# code is slower, and no test measures speed. The notebooks are executed without it
# (tests/notebooks/test_notebooks.py), since they print timings.
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0"
.venv/bin/python -m ruff check vi_jax tests benchmarks notebooks docs
# worksteal: the long tests (notebooks, benchmark smoke runs, real processes) do not
# leave one worker idle at the end.
.venv/bin/python -m pytest -n 2 --dist worksteal -q tests "$@"
# The jit/vmap/grad smoke tests are left out of the float64 pass: they check
# transformations, not precision, and are mostly compile time.
JAX_ENABLE_X64=1 .venv/bin/python -m pytest -n 2 --dist worksteal -q -k "not jit" \
  tests/estimators/test_enumeration.py \
  tests/estimators/test_importance.py tests/estimators/test_weights.py \
  tests/estimators/test_bounds.py
.venv/bin/python -m mypy
VENV_PYTHON="$root/.venv/bin/python" bash scripts/docs.sh --no-execute
bash scripts/check_package.sh
