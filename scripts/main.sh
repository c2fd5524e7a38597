#!/usr/bin/env bash
# The main job: sets up .venv, trains a VAE on dynamically binarised MNIST with the
# built-in defaults, evaluates it (importance-sampled test log-likelihood) and writes
# pictures and metrics.json to runs/mnist (or the directory given by --out).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh" dev
cd "$root"
exec .venv/bin/vi-jax train --out runs/mnist "$@"
