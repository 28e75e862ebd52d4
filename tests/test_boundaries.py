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
