"""`collector` never imports `dashboard`: the collector can ship and scale alone."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_collector_never_imports_dashboard():
    offenders = []
    for path in (ROOT / "collector").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "dashboard" or name.startswith("dashboard.") for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"collector imports dashboard at {offenders}"


# ---- No import circles --------------------------------------------------------
#
# A circle makes the import order matter (a module half-initialised when the
# other asks for it) and hides which of two modules is the lower layer. The
# graph counts every import, those inside functions too: a function-level
# import is how a circle usually gets papered over.

PACKAGES = ("collector", "dashboard")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imported(node, module: str, is_package: bool, known) -> list[str]:
    """The modules of ours an import statement loads, its packages included."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # `from package import module` loads the submodule; `from module import name` does not.
        targets = [f"{base}.{alias.name}" for alias in node.names]
        targets = [t if t in known else base for t in targets]
    loaded = set()
    for target in targets:
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            if name in known:
                loaded.add(name)
    return sorted(loaded)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_imported(node, name, is_package, modules))
        # A module's own packages are loaded before it; they are not its imports.
        edges -= {name.rsplit(".", end)[0] for end in range(1, name.count(".") + 1)}
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (as a path that ends where it starts) per strongly connected group."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_circle_in(graph, component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _circle_in(graph, component: set[str]) -> list[str]:
    """A shortest circle through the first module of `component`, for the message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(component)


def test_no_import_circles_in_collector_and_dashboard():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" → ".join(c) for c in found)


def test_the_circle_finder_sees_a_circle_through_a_function_level_import():
    # The check above passes only if it can fail: a known circle must be reported.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    graph = import_graph()
    # dashboard.live imports collector.db inside a function only.
    assert "collector.db" in graph["dashboard.live"]
