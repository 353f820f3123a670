"""The server's end-of-operation hooks (server.conf `hooks`), as Kadeploy3 runs them, on the testbed.

The testbed's generated server.conf sets all three (`end_of_deployment`, `end_of_reboot`,
`end_of_power`) to `etc/scripts/end_hook <kind> WORKFLOW_ID`, which appends `<kind> <wid>` to
`<dir>/hooks.log`. Kadeploy3 (server/kaworkflow.rb `work_init_info` and `work_end_hook`) runs the
hook of the operation's kind only when the client asked `--hook`, after the operation ended, with
WORKFLOW_ID replaced by the workflow id, and passes it nothing else. The VLAN hook (`network/vlan/
set_cmd` with `hostname_suffix`) is exercised by test_e2e_vlan.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kadeploy_testbed.configdir import hooks_log

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

HOOK_WAIT = 30.0  # the hook runs once the operation is done; Kadeploy3 gives it 20 s


def _hook_lines(site) -> list[str]:
    path = hooks_log(site.directory)
    return path.read_text().splitlines() if path.exists() else []


def _wait_for_hook_line(site, line: str) -> None:
    deadline = time.monotonic() + HOOK_WAIT
    while line not in _hook_lines(site):
        if time.monotonic() > deadline:
            pytest.fail(f"no {line!r} in {hooks_log(site.directory)} after {HOOK_WAIT}s: {_hook_lines(site)}")
        time.sleep(0.5)


def _run(site, tmp_path: Path, name: str, *args: str) -> str:
    """Run a tool with --write-workflow-id; returns the workflow id it wrote."""
    wid_file = tmp_path / f"{name}.wid"
    result = site.tool(*args, "--write-workflow-id", str(wid_file))
    wid = wid_file.read_text().strip()
    assert wid, result.stdout
    return wid


def test_each_kind_of_operation_runs_its_hook_with_the_workflow_id(site, tmp_path) -> None:
    node = site.nodes[3]
    ok_file = tmp_path / "deploy.ok"
    wid = _run(site, tmp_path, "deploy", "kadeploy3", "-e", "debian12-min", "-m", node, "-k", str(site.admin_keys),
               "--hook", "-o", str(ok_file))
    assert ok_file.read_text().split() == [node]
    assert wid.startswith("D-")
    _wait_for_hook_line(site, f"deployment {wid}")

    wid = _run(site, tmp_path, "reboot", "kareboot3", "-r", "simple", "-m", node, "--hook",
               "-o", str(tmp_path / "reboot.ok"))
    assert (tmp_path / "reboot.ok").read_text().split() == [node]
    _wait_for_hook_line(site, f"reboot {wid}")

    # a power status is a power operation too (server/kapower.rb `power_get` goes through work_create)
    wid = _run(site, tmp_path, "status", "kapower3", "--status", "-m", node, "--hook")
    _wait_for_hook_line(site, f"power {wid}")
    wid = _run(site, tmp_path, "on", "kapower3", "--on", "-m", node, "--hook", "-o", str(tmp_path / "on.ok"))
    assert (tmp_path / "on.ok").read_text().split() == [node]
    _wait_for_hook_line(site, f"power {wid}")

    # each operation ran its own kind's hook, once
    lines = _hook_lines(site)
    for line in set(lines):
        assert lines.count(line) == 1, lines


def test_no_hook_runs_unless_asked(site, tmp_path) -> None:
    node = site.nodes[3]
    wid = _run(site, tmp_path, "status", "kapower3", "--status", "-m", node)
    # the status is done when the tool returns; give a hook the time it would have had
    time.sleep(3)
    assert not [line for line in _hook_lines(site) if line.endswith(f" {wid}")], _hook_lines(site)
