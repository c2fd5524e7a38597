#!/usr/bin/env bash
# The test command: sets up .venv, then runs the whole suite on the CPU, and the
# estimator core a second time in float64. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh" dev,notebooks
cd "$root"
export JAX_PLATFORMS=cpu VI_JAX_OFFLINE="${VI_JAX_OFFLINE:-}"
.venv/bin/python -m ruff check vi_jax tests benchmarks notebooks
.venv/bin/python -m pytest -n 2 -q tests "$@"
JAX_ENABLE_X64=1 .venv/bin/python -m pytest -n 2 -q tests/estimators
