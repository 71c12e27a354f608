"""The house rules that keep the layers changeable (issue 10), checked on the source tree:

- import-linter's contracts in pyproject.toml (layers of DESIGN.md, MPI only in runtime.comm, no sibling cycles),
  and proof that an upward import breaks them;
- no import cycle between any two modules, function-local imports included (grimp's graph);
- no private name (``_x``) imported or reached across modules; the Triton kernels import only lower layers;
- no file in ldb_hpc/ or kernels/_triton over 450 lines (model/ideal.py ≤ 250);
- ruff is clean.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGE = REPO / "ldb_hpc"
TRITON = REPO / "kernels" / "_triton"  # the package ldb_hpc._triton


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN} (`make test` installs it)"
    return str(path)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package found in ``cwd``. Python runs with -S and site-packages on PYTHONPATH after
    ``cwd``: the editable install's import hook (a .pth file) would otherwise hand grimp the installed tree."""
    _tool("lint-imports")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": f"{cwd}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-S", "-c", code, "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 3, proc.stdout


@pytest.mark.parametrize("importer, imported", [
    ("ops/reference.py", "ldb_hpc.model.ldb"),  # ops → model: upward
    ("geometry/peptide.py", "ldb_hpc.ops"),  # geometry → ops: upward
    ("io/topology.py", "ldb_hpc.model.features"),  # io ↔ model: siblings
    ("model/features.py", "ldb_hpc.runtime.comm"),  # model → runtime (and so mpi4py)
])
def test_an_upward_import_breaks_the_contracts(tmp_path, importer, imported):
    """A copy of the package with one wrong import (inside a function, where it is easiest to hide) fails."""
    shutil.copytree(PACKAGE, tmp_path / "ldb_hpc", ignore=shutil.ignore_patterns("__pycache__", "weights", "*.so"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "ldb_hpc" / importer, "a") as f:
        f.write(f"\n\ndef _sneaky():\n    import {imported}  # noqa: F401\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout + proc.stderr


def test_no_import_cycle_anywhere():
    grimp = pytest.importorskip("grimp")  # installed with import-linter
    graph = grimp.build_graph("ldb_hpc", include_external_packages=False)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if imported != module and chain:
                cycles.append(" -> ".join((module,) + tuple(chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _sources():
    return sorted(PACKAGE.rglob("*.py")) + sorted(TRITON.glob("*.py"))


def _module_name(path: Path) -> str:
    if path.is_relative_to(TRITON):
        return "ldb_hpc._triton." + path.stem
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _cross_module_private_uses(source: str, me: str, label: str) -> list[str]:
    """`from ldb_hpc.x import _y` and `m._y` where m is an ldb_hpc module bound by an import, in a module other
    than x. source: the module's text; me: its dotted name; label: how hits name it."""
    tree = ast.parse(source, label)
    bound: dict[str, str] = {}  # local name → ldb_hpc module it refers to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ldb_hpc"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if _private(alias.name) and node.module != me and not (PACKAGE / alias.name).exists() \
                        and target not in ("ldb_hpc._cpu", "ldb_hpc._triton"):
                    found.append(f"{label}:{node.lineno} imports {target}")
                bound[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ldb_hpc") and alias.asname:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                and _private(node.attr) and bound[node.value.id] != me:
            found.append(f"{label}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    found = [hit for path in _sources()
             for hit in _cross_module_private_uses(path.read_text(), _module_name(path), str(path.relative_to(REPO)))]
    assert not found, "\n".join(found)


def test_the_private_name_check_catches_one():
    source = "from ldb_hpc.geometry.peptide import _settle\nfrom ldb_hpc.geometry import atoms as a\nx = a._secret\n"
    assert len(_cross_module_private_uses(source, "ldb_hpc.model.probe", "probe.py")) == 2


def test_triton_kernels_import_only_lower_layers():
    allowed = ("ldb_hpc.chem", "ldb_hpc.geometry", "ldb_hpc.errors", "ldb_hpc.version", "ldb_hpc._triton")
    bad = []
    for path in sorted(TRITON.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            bad += [f"{path.name}:{node.lineno} {n}" for n in names
                    if n.startswith("ldb_hpc") and not n.startswith(allowed)]
    assert not bad, bad


def test_no_triton_module_is_too_long():
    """One module per op (issue 18): none of the Triton sources grows back into a file of every kernel."""
    lengths = {p.name: len(p.read_text().splitlines()) for p in TRITON.glob("*.py")}
    assert len(lengths) > 5 and not {k: v for k, v in lengths.items() if v > 450}, lengths


def test_no_source_file_is_too_long():
    lengths = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {k: v for k, v in lengths.items() if v > 450}
    assert not long, long
    assert lengths["ldb_hpc/model/ideal.py"] <= 250


def test_ruff_is_clean():
    proc = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "ldb_hpc", "kernels", "tests", "benchmarks", "scripts"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
