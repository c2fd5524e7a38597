"""The architecture's rules, checked: no private names across modules, estimators free of
Flax/optax, the contracts declared once, and the README's API table, `vj.__all__` and
docs/ARCHITECTURE.md in agreement."""

import ast
import pathlib
import re
import subprocess
import sys

import vi_jax as vj

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vi_jax"

# Private names that estimator modules may still take from each other while a rewrite is
# in flight: none since the shared kernels (`_logspace`, `_common`, `kl`) landed. An entry
# must still occur (the test below fails otherwise), so that the list cannot rot.
PENDING_ESTIMATOR_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def _module_path(module: str) -> pathlib.Path | None:
    """The file or package directory of a `vi_jax` module, or None if it is no module."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _private_imports() -> set[tuple[str, str, str]]:
    """`(file, module, name)` for each private object a vi_jax file takes from another.

    A private *module* may be imported from within the package that holds it (e.g.
    `vi_jax._validation` anywhere, `vi_jax.data._cache` within `vi_jax.data`); a private
    object (`_name` that is not a module) may not be imported, nor reached as
    `module._name`, from another module.
    """
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), rel)
        modules = {}  # local name -> the vi_jax module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vi_jax"):
                parts = node.module.split(".")
                for i, part in enumerate(parts):
                    # `from vi_jax.x._private import y`: only from within vi_jax.x.
                    outside = not rel.startswith("/".join(parts[:i]) + "/")
                    if part.startswith("_") and outside:
                        found.add((rel, ".".join(parts[:i]), part))
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if _module_path(full) is not None:
                        modules[alias.asname or alias.name] = full
                        parent = node.module
                        private_module = alias.name.startswith("_")
                        if private_module and not rel.startswith(parent.replace(".", "/") + "/"):
                            found.add((rel, node.module, alias.name))
                    elif alias.name.startswith("_"):
                        found.add((rel, node.module, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("vi_jax") and alias.asname:
                        modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and _module_path(f"{modules[node.value.id]}.{node.attr}") is None
            ):
                found.add((rel, modules[node.value.id], node.attr))
    return found


def test_no_private_names_across_modules():
    found = _private_imports()
    new = sorted(found - PENDING_ESTIMATOR_PRIVATE_IMPORTS)
    assert not new, f"private names imported across modules (make them public): {new}"
    gone = sorted(PENDING_ESTIMATOR_PRIVATE_IMPORTS - found)
    assert not gone, f"no longer imported, delete from PENDING_ESTIMATOR_PRIVATE_IMPORTS: {gone}"


def test_the_checker_sees_both_kinds_of_private_access(tmp_path, monkeypatch):
    # The rule itself must be able to fail: a private object by `from`, and by attribute.
    pkg = tmp_path / "vi_jax"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/a.py", "_util.py"):
        (pkg / name).write_text("")
    (pkg / "sub/b.py").write_text(
        "from vi_jax.sub.a import _hidden\nfrom vi_jax import _util\nfrom vi_jax.sub import a\n"
        "a._other()\n_util.fine()\n"
    )
    (pkg / "c.py").write_text("from vi_jax.sub._impl import x\n")  # a private module
    (pkg / "sub/_impl.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert _private_imports() == {
        ("vi_jax/sub/b.py", "vi_jax.sub.a", "_hidden"),
        ("vi_jax/sub/b.py", "vi_jax.sub.a", "_other"),
        ("vi_jax/c.py", "vi_jax.sub", "_impl"),
    }


def test_estimators_import_no_flax_or_optax():
    # In a fresh interpreter, what importing the estimator layer pulls in, transitively.
    # `vi_jax/__init__.py` imports every layer, so the package is registered bare first:
    # only the estimators and what they import (types, _validation) run.
    code = (
        "import importlib.util, sys, types\n"
        "pkg = types.ModuleType('vi_jax')\n"
        "pkg.__path__ = importlib.util.find_spec('vi_jax').submodule_search_locations\n"
        "sys.modules['vi_jax'] = pkg\n"
        "import vi_jax.estimators\n"
        "assert 'vi_jax.models' not in sys.modules\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'flax', 'optax', 'orbax'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_contracts_are_declared_once():
    # `Array = ...`, `LogJoint = ...` etc. live in vi_jax/types.py only.
    names = ("Array", "PRNGKey", "PyTree", "LogJoint", "ModelFn", "LossFn", "TrainStep")
    pattern = re.compile(rf"^({'|'.join(names)})\s*(:[^=]*)?=", re.M)
    where = [
        f"{p.relative_to(ROOT)}: {m.group(1)}"
        for p in PACKAGE.rglob("*.py")
        if p.name != "types.py"
        for m in pattern.finditer(p.read_text())
    ]
    assert not where, where


def _readme_api_names() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Public API at a glance", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    spans = [span for row in rows for span in re.findall(r"`([^`]+)`", row)]
    return [re.match(r"[A-Za-z_][\w.]*", span).group(0) for span in spans]


def test_readme_api_table_agrees_with_the_top_level():
    names = _readme_api_names()
    plain = {n for n in names if "." not in n}
    assert plain - set(vj.__all__) == set(), "README names not in vj.__all__"
    assert set(vj.__all__) - plain == set(), "vj.__all__ names missing from the README table"
    for name in names:
        if "." in name:
            head, *rest = name.split(".")
            assert head == "vj", f"write layer names as vj.<layer>.<name>: {name}"
            obj = vj
            for part in rest:
                assert hasattr(obj, part), f"README names {name}, which does not exist"
                obj = getattr(obj, part)


def test_top_level_is_curated():
    assert len(vj.__all__) == len(set(vj.__all__)) and 40 <= len(vj.__all__) <= 64
    assert all(hasattr(vj, n) for n in vj.__all__)
    for internal in ("tree_select", "apply_if", "get_activation", "softplus_scale", "EYE_COLOURS"):
        assert internal not in vj.__all__ and not hasattr(vj, internal)


def test_architecture_doc_names_files_that_exist():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`((?:vi_jax|tests|benchmarks|docs)/[\w/.]+\.(?:py|md))`", doc))
    assert len(paths) >= 10
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing
    assert "ARCHITECTURE.md" in (ROOT / "docs" / "CONVENTIONS.md").read_text()
