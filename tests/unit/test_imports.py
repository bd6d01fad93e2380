"""The layering holds: `shared/` imports no service and not the application, `services/` not the
application, and no import loop exists among the project's modules (imports inside functions and
under TYPE_CHECKING count, and so do module names given to `importlib.import_module`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "touchline")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module name the file imports, as written (`from a import b` gives `a` and `a.b`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _calls_import_module(node) and node.args:
            names.add(_leading_text(node.args[0]))
    return names


def _calls_import_module(call: ast.Call) -> bool:
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name == "import_module"


def _leading_text(argument: ast.expr) -> str:
    """The literal start of a module name: "services.x" of `f"services.{name}.api"`."""
    if isinstance(argument, ast.JoinedStr) and argument.values:
        argument = argument.values[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value.rstrip(".")
    return ""


def project() -> dict[str, set[str]]:
    """Module -> every name it imports."""
    return {
        module_name(path): imported(path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    forbidden = {"shared": ("services", "touchline"), "services": ("touchline",)}
    return [
        f"{module} imports {name}"
        for module, names in sorted(graph.items())
        for layer, above in forbidden.items()
        if in_package(module, layer)
        for name in sorted(names)
        if any(in_package(name, package) for package in above)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    edges = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_shared_imports_no_service_and_services_not_the_application() -> None:
    assert layering_violations(project()) == []


def test_no_import_loops() -> None:
    assert cycles(project()) == []


def test_the_checks_see_function_level_imports_strings_and_loops(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "import importlib\n"
        "def load(name):\n"
        "    from shared import b\n"
        "    return importlib.import_module(f'services.{name}.api')\n"
    )
    names = imported(source)
    assert {"shared", "shared.b", "services"} <= names
    graph = {
        "shared.a": names,
        "shared.b": {"shared.a"},
        "services": set(),
        "services.x.api": {"touchline.cli"},
        "touchline.cli": set(),
    }
    assert cycles(graph) == [["shared.a", "shared.b"]]
    assert layering_violations(graph) == [
        "services.x.api imports touchline.cli",
        "shared.a imports services",
    ]
