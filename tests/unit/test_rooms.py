"""The rooms of `src/kadeploy` import downwards: the server and the steps meet only in `kadeploy.operations`.

Nothing outside `server/` imports `kadeploy.server` (the steps used to import
the server's operation types: a cycle hidden by lazy imports), and the server
imports `kadeploy.steps` in one place only, the daemon, which wires the
runner into the server. Every import is checked, including those inside
functions and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kadeploy

PACKAGE = Path(kadeploy.__file__).parent


def _imported_modules(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["kadeploy", *path.relative_to(package_root).parts[:-1]]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from kadeploy import server` names the room in the imported name
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def room_violations(package_root: Path) -> list[str]:
    """Every import that crosses the rule, as `path:line imports module (why)`."""
    composition_root = package_root / "server" / "daemon.py"
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        in_server = path.relative_to(package_root).parts[0] == "server"
        for line, module in _imported_modules(path, package_root):
            where = f"{path.relative_to(package_root.parent)}:{line}"
            if not in_server and _in_room(module, "kadeploy.server"):
                problems.append(f"{where} imports {module} (only the server may)")
            if in_server and path != composition_root and _in_room(module, "kadeploy.steps"):
                problems.append(f"{where} imports {module} (only the daemon wires the steps in)")
    return problems


def test_only_the_server_imports_the_server_and_only_the_daemon_imports_the_steps():
    assert room_violations(PACKAGE) == []


def test_the_rule_sees_lazy_relative_and_type_checking_imports(tmp_path):
    root = tmp_path / "kadeploy"
    (root / "steps").mkdir(parents=True)
    (root / "server").mkdir()
    (root / "steps" / "runner.py").write_text("def create():\n    from ..server import operations\n")
    (root / "catalog.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    import kadeploy.server.console\n")
    (root / "server" / "app.py").write_text("from kadeploy.steps.runner import EngineRunner\n")
    (root / "server" / "daemon.py").write_text("from kadeploy.steps.runner import create_services\n")
    assert room_violations(root) == [
        "kadeploy/catalog.py:3 imports kadeploy.server.console (only the server may)",
        "kadeploy/server/app.py:1 imports kadeploy.steps.runner (only the daemon wires the steps in)",
        "kadeploy/server/app.py:1 imports kadeploy.steps.runner.EngineRunner (only the daemon wires the steps in)",
        "kadeploy/steps/runner.py:2 imports kadeploy.server (only the server may)",
        "kadeploy/steps/runner.py:2 imports kadeploy.server.operations (only the server may)",
    ]
