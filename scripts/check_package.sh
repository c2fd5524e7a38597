#!/usr/bin/env bash
# The packaging check (run by scripts/test.sh): `python -m build` makes the sdist and the
# wheel; the wheel is installed into a fresh virtual environment and the README's example
# is run from it, outside the repository, so it uses the installed files only.
#
# By default the fresh environment gets vi_jax's dependencies by linking the project
# .venv's site-packages as a plain path (no .pth processing, so the editable vi_jax there
# stays invisible); VI_JAX_WHEEL_CHECK=full installs them from the package index instead
# (minutes, network).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${VENV_PYTHON:-$root/.venv/bin/python}"
dist="$root/build/dist"
rm -rf "$dist" && mkdir -p "$dist"
"$py" -m build --outdir "$dist" "$root" >"$root/build/build.log" 2>&1 \
  || { cat "$root/build/build.log"; exit 1; }
wheel=$(ls "$dist"/vi_jax-*.whl)
sdist=$(ls "$dist"/vi_jax-*.tar.gz)
version=$("$py" -c "import ast, pathlib; t = ast.parse(pathlib.Path('vi_jax/__init__.py').read_text()); print(next(n.value.value for n in t.body if isinstance(n, ast.Assign) and n.targets[0].id == '__version__'))")
case "$wheel" in *"vi_jax-$version-"*) ;; *) echo "wheel $wheel is not version $version"; exit 1;; esac
"$py" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "vi_jax/py.typed" in names, "py.typed is not in the wheel"
assert not [n for n in names if n.startswith(("tests/", "notebooks/", "benchmarks/"))], names
sdist = tarfile.open(sys.argv[2]).getnames()
assert any(n.endswith("vi_jax/py.typed") for n in sdist), "py.typed is not in the sdist"
print(f"wheel: {len(names)} files, sdist: {len(sdist)} files, py.typed in both")
PY
venv="$root/build/wheel-venv"
rm -rf "$venv"
"$py" -m venv --without-pip "$venv"
vpy="$venv/bin/python"
site=$("$vpy" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ "${VI_JAX_WHEEL_CHECK:-linked}" = full ]; then
  "$vpy" -m ensurepip -q && "$vpy" -m pip install -q "$wheel"
else
  # install the wheel's files only (pip of the project venv, targeting the fresh one)
  "$py" -m pip install -q --no-deps --no-compile --target "$site" "$wheel"
  "$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" >"$site/_deps.pth"
  # the console script, as pip would write it
  printf '#!%s\nimport sys\nfrom vi_jax.cli import main\nsys.exit(main())\n' "$vpy" >"$venv/bin/vi-jax"
  chmod +x "$venv/bin/vi-jax"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" - "$root/README.md" "$work/example.py" <<'PY'
import pathlib, re, sys
code = re.search(r"```python\n(.*?)```", pathlib.Path(sys.argv[1]).read_text(), re.S).group(1)
pathlib.Path(sys.argv[2]).write_text(code)
PY
cd "$work"
"$vpy" -c "import vi_jax, pathlib, sys; f = pathlib.Path(vi_jax.__file__).resolve(); \
assert str(f).startswith('$venv'), f'vi_jax imported from {f}, not the wheel'; \
assert (f.parent / 'py.typed').exists(); print('vi_jax', vi_jax.__version__, 'from', f.parent)"
JAX_PLATFORMS=cpu "$vpy" example.py | tee out.txt
"$vpy" - <<'PY'
bound, truth = (float(v) for v in open("out.txt").read().split())
assert bound <= truth + 0.01 and abs(bound - truth) < 0.05, (bound, truth)
print(f"README example from the wheel: IWAE {bound:.4f} vs log p(x) {truth:.4f}")
PY
JAX_PLATFORMS=cpu "$venv/bin/vi-jax" --help >/dev/null && echo "vi-jax --help from the wheel: ok"
