"""No import cycles between the project's modules.

A cycle held together only by type hints (``if TYPE_CHECKING:``) or by an import inside a function is still
a cycle: the two modules cannot be read, tested or moved apart.  So the graph counts every ``import`` and
``from ... import`` statement of a module, wherever it stands.  An edge goes to the most specific project
module a statement names (``from pkg import sub`` is an edge to ``pkg.sub`` when that is a module).  The
implicit import of a package's ``__init__`` when one of its modules is imported is not an edge, as in
pylint's ``cyclic-import``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]


def project_packages(root: Path) -> List[str]:
    """The top-level packages of ``root``: its folders with an ``__init__.py``."""
    return sorted(path.parent.name for path in root.glob("*/__init__.py"))


def module_files(root: Path, packages: List[str]) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` (a package is its ``__init__``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_graph(root: Path, packages: List[str]) -> Dict[str, Set[str]]:
    """Module -> the project modules its import statements name."""
    modules = module_files(root, packages)

    def project_module(name: str):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(project_module(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets.update(project_module(f"{base}.{alias.name}") for alias in node.names)
        graph[name] = targets - {None, name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def test_the_project_has_no_import_cycles():
    packages = project_packages(REPO)
    assert {"dualoptim", "common", "ImageClassification", "LLM", "ImageGeneration"} <= set(packages)
    graph = import_graph(REPO, packages)
    assert graph["ImageClassification.pipeline"] >= {"ImageClassification.config", "ImageClassification.lora"}
    assert cycles(graph) == [], "import cycles (move what both modules need into one neither imports back)"


def test_the_check_finds_cycles_through_type_hints_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("import pkg.a\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..sub import d\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub.c import f\nimport os\n")
    (pkg / "leaf.py").write_text("from pkg import a\n")
    graph = import_graph(tmp_path, project_packages(tmp_path))
    assert graph["pkg.leaf"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]
