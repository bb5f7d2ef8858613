"""The package's imports go one way: ops -> nn -> graph (registry, wiring, config, builder) -> model ->
engine -> cli/commands. Read with ``ast`` from the source, so a function-level import counts too
(only ``if TYPE_CHECKING:`` blocks, which never run, are left out)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "zoo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importing package
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        # `from zoo.nn import common` imports the module zoo.nn.common; `from zoo.x import name` zoo.x
        return [f"{base}.{alias.name}" for alias in node.names]
    return []


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """``(module -> zoo modules it imports, [(module, target) for each function-level import])``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    in_functions: list[tuple[str, str]] = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    for other in child.orelse:
                        visit(other, in_function)
                    continue
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets = {resolve(t) for t in _imported(child, package) if t == "zoo" or t.startswith("zoo.")}
                for target in sorted(t for t in targets if t and t != name):
                    graph[name].add(target)
                    if inner:
                        in_functions.append((name, target))
                visit(child, inner)

        visit(ast.parse(path.read_text()), False)
        graph.setdefault(name, set())
    return dict(graph), in_functions


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_import_cycles() -> None:
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_engine_imports_neither_cli_nor_commands() -> None:
    graph, _ = import_graph()
    upward = [(m, t) for m, targets in graph.items() if _under(m, "zoo.engine") for t in targets
              if _under(t, "zoo.cli") or _under(t, "zoo.commands")]
    assert upward == []


def test_ops_import_nothing_from_zoo() -> None:
    graph, _ = import_graph()
    assert any(_under(m, "zoo.ops") for m in graph), "zoo/ops is missing"
    assert {m: sorted(t) for m, t in graph.items() if _under(m, "zoo.ops") and any(not _under(x, "zoo.ops") for x in t)} == {}


def test_checkpoint_loading_imports_no_family() -> None:
    graph, _ = import_graph()
    families = [t for t in graph["zoo.checkpoint"] if _under(t, "zoo.nn")]
    assert families == []


def test_lower_layers_never_import_upper_ones() -> None:
    """nn and the graph layer know nothing of the model, the engine or the CLI; the builder names no
    family (the registry imports them by name)."""
    graph, _ = import_graph()
    upper = ("zoo.model", "zoo.engine", "zoo.cli", "zoo.commands")
    for lower in ("zoo.nn", "zoo.registry", "zoo.wiring", "zoo.config", "zoo.builder", "zoo.limits"):
        bad = [(m, t) for m, ts in graph.items() if _under(m, lower) for t in ts if any(_under(t, u) for u in upper)]
        assert bad == [], lower
    assert [t for t in graph["zoo.builder"] if _under(t, "zoo.nn")] == []


def test_function_level_imports_only_in_the_cli() -> None:
    """Outside the CLI layer (which defers heavy imports so `zoo --help` stays fast) every zoo import
    sits at the top of its file, where a cycle would show."""
    _, in_functions = import_graph()
    assert sorted({(m, t) for m, t in in_functions if not (_under(m, "zoo.cli") or _under(m, "zoo.commands"))}) == []
