"""The product (`kadeploy`) stands without the testbed distribution (`kadeploy_testbed`).

Why: the testbed is virtual hardware that lives beside the product, in its own
distribution (`testbed/`); a site installs `kadeploy` alone. An import of the
testbed from the product would work on every developer machine (both are
installed there) and break only at a site, so it is checked here twice: by
importing every product module in a Python where the testbed cannot be
imported, and by reading every product module's imports (which also catches an
import the first check does not reach, e.g. inside a function).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
PRODUCT_SOURCE = REPOSITORY / "src"
PRODUCT_PACKAGE = PRODUCT_SOURCE / "kadeploy"
TESTBED_PACKAGE = "kadeploy_testbed"
#: scripts that only run inside another program: alembic runs env.py in its migration context
#: (`context.config` exists only there). The import reader still reads them.
RUN_BY_ANOTHER_PROGRAM = {"kadeploy.db.alembic.env"}

# Run in a fresh interpreter: the product comes first on the path, every path
# entry holding the testbed package is removed (the editable install adds one),
# and a finder refuses the testbed and records who asked for it, so that a
# product module that catches the ImportError is still caught.
IMPORT_EVERY_MODULE = r"""
import importlib, importlib.abc, json, os, pkgutil, sys, traceback

product_source, testbed, skipped = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
sys.path[:] = [product_source] + [entry for entry in sys.path
                                  if not os.path.isdir(os.path.join(entry or ".", testbed))]
attempts = []

class RefuseTestbed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == testbed or name.startswith(testbed + "."):
            frame = sys._getframe(1)
            while frame is not None and not frame.f_globals.get("__name__", "").startswith("kadeploy."):
                frame = frame.f_back
            importer = frame.f_globals["__name__"] if frame is not None else None
            attempts.append({"name": name, "importer": importer, "while_importing": current})
            raise ImportError(f"{name} refused: the product must not import the testbed")
        return None

current = None
sys.meta_path.insert(0, RefuseTestbed())
try:
    import kadeploy_testbed
    testbed_refused = False
except ImportError:
    testbed_refused = True
attempts.clear()

import kadeploy
imported, failures = [], {}
def walk_error(name):
    failures[name] = traceback.format_exc(limit=3)
for module in pkgutil.walk_packages(kadeploy.__path__, "kadeploy.", onerror=walk_error):
    if module.name in skipped:
        continue
    current = module.name
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except BaseException:
        failures[module.name] = traceback.format_exc(limit=3)
print(json.dumps({"product_file": kadeploy.__file__, "testbed_refused": testbed_refused,
                  "imported": imported, "failures": failures, "attempts": attempts}))
"""


def _import_every_product_module() -> dict:
    process = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE, str(PRODUCT_SOURCE), TESTBED_PACKAGE,
                              json.dumps(sorted(RUN_BY_ANOTHER_PROGRAM))],
                             capture_output=True, text=True, timeout=300, cwd=REPOSITORY)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_every_product_module_imports_with_the_testbed_refused() -> None:
    report = _import_every_product_module()
    assert report["testbed_refused"], "the check is void: kadeploy_testbed could still be imported"
    assert Path(report["product_file"]).resolve() == PRODUCT_PACKAGE / "__init__.py"
    assert report["failures"] == {}, "\n".join(f"{name}:\n{error}" for name, error in report["failures"].items())
    assert report["attempts"] == [], f"product modules tried to import the testbed: {report['attempts']}"
    expected = {".".join(path.relative_to(PRODUCT_SOURCE).with_suffix("").parts).removesuffix(".__init__")
                for path in PRODUCT_PACKAGE.rglob("*.py")} - {"kadeploy"} - RUN_BY_ANOTHER_PROGRAM
    missing = expected - set(report["imported"])
    assert not missing, f"modules the walk did not import: {sorted(missing)}"


def _names_the_testbed(module: str | None) -> bool:
    return module is not None and (module == TESTBED_PACKAGE or module.startswith(TESTBED_PACKAGE + "."))


def imports_of_the_testbed(source: str, filename: str) -> list[str]:
    """Every import of the testbed in `source`: statements, and import_module/__import__ of a literal."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {alias.name}" for alias in node.names
                      if _names_the_testbed(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _names_the_testbed(node.module):
            found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _names_the_testbed(node.args[0].value):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__"):
                found.append(f"{filename}:{node.lineno}: {called}({node.args[0].value!r})")
    return found


def test_no_product_module_imports_the_testbed() -> None:
    modules = sorted(PRODUCT_PACKAGE.rglob("*.py"))
    assert len(modules) > 50, f"only {len(modules)} modules under {PRODUCT_PACKAGE}: wrong directory?"
    found = [line for path in modules
             for line in imports_of_the_testbed(path.read_text(), str(path.relative_to(REPOSITORY)))]
    assert found == [], "the product imports the testbed:\n" + "\n".join(found)


def test_the_import_reader_sees_every_form_of_import() -> None:
    source = """
import kadeploy_testbed
import os, kadeploy_testbed.fake.relay as fake_relay
from kadeploy_testbed.layout import NodeSpec
def later():
    from kadeploy_testbed import cli
    importlib.import_module("kadeploy_testbed.daemon")
    __import__("kadeploy_testbed")
from kadeploy import testbed_helpers
import kadeploy_testbedx
'''a docstring naming kadeploy_testbed.fake.relay is not an import'''
"""
    found = imports_of_the_testbed(source, "example.py")
    assert sorted(int(line.split(":")[1]) for line in found) == [2, 3, 4, 6, 7, 8], found
