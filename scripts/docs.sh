#!/usr/bin/env bash
# Builds the documentation site into build/site (open build/site/index.html): executes
# every notebook once through the notebook test (which checks its figures and writes
# build/notebooks/*.ipynb), then runs Sphinx with warnings as errors over those files.
# `--no-execute` skips the notebook run and reuses build/notebooks/ (as scripts/test.sh
# does, right after the test suite has written them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${VENV_PYTHON:-$root/.venv/bin/python}"
if [ "${1:-}" != "--no-execute" ]; then
  [ -n "${VENV_PYTHON:-}" ] || bash scripts/env.sh dev,notebooks,docs
  JAX_PLATFORMS=cpu "$py" -m pytest -q -n "${VI_JAX_DOCS_JOBS:-2}" tests/notebooks
fi
rm -rf build/site build/doctrees
"$py" -m sphinx -W --keep-going -q -b html -d build/doctrees docs build/site
echo "site: $root/build/site/index.html"
