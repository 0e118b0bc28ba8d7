"""The package's shape: no import cycle, no module over 600 lines, few top-level modules, one name per idea.

The layers themselves are import-linter's (``[tool.importlinter]`` in pyproject.toml, ``make lint``);
these are the rules it does not check. All of them read the source (AST), nothing is imported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "app" / "sidecar_injector"
MAX_LINES = 600
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports at module level, ``if TYPE_CHECKING:`` blocks included.

    Imports inside functions run later (when called) and are left out: they cannot form an
    import-time cycle. ``from package import module`` counts as importing the module.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                if target in modules:
                    found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules)
            elif isinstance(node, (ast.If, ast.Try)):  # if TYPE_CHECKING:, try/except ImportError
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_level_import_cycle_type_checking_imports_included():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_type_checking_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, "split these along their seams"


def test_few_modules_directly_under_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_sub_package_is_a_layer_of_the_import_contract():
    """A new sub-package must be placed: the contract is exhaustive, and names each of these."""
    text = (PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    for package in sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")):
        assert f'"{package}"' in text or f"{package} |" in text or f"| {package}" in text, package
    assert "exhaustive = true" in text


def _defined(node: ast.stmt) -> list[str]:
    """The names a module-level statement defines: a class, a function, assigned constants and type aliases."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def test_no_two_modules_define_the_same_public_name():
    """One name per idea: a public class, function, constant or type alias is defined in one module only."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in _modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for defined in _defined(node):
                if not defined.startswith("_"):
                    where[defined].append(name)
    assert {name: found for name, found in where.items() if len(found) > 1} == {}


def test_nothing_in_the_package_imports_the_build_time_crd_generator():
    modules = _modules()
    importers = [
        name for name, path in modules.items() if "sidecar_injector.profiles.crd_schema" in _imports(name, path, modules)
    ]
    assert importers == []
