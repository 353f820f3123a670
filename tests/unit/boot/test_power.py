"""Escalation with real shell commands, the reboot window, groups, overrides, power status."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp, parse_group_file, substitute
from kadeploy.boot.power import escalate, power_status, retry_start_level
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.errors import ConfigError, KadeployError

NODES = [f"node-{i}.c1.testbed" for i in range(1, 7)]


def collect():
    lines: list[tuple[int, str]] = []
    return lines, lambda level, text: lines.append((level, text))


def test_substitutions():
    cmd = substitute("DEFAULT_CONNECTOR root@HOSTNAME_FQDN reboot HOSTNAME_SHORT GROUP_SHORT GROUP_FQDN",
                     "node-1.c1.testbed", group=["node-1.c1.testbed", "node-2.c1.testbed"], default_connector="ssh -q")
    assert cmd == "ssh -q root@node-1.c1.testbed reboot node-1 node-1,node-2 node-1.c1.testbed,node-2.c1.testbed"


def test_unsafe_hostname_is_refused():
    with pytest.raises(KadeployError, match="Invalid node name"):
        substitute("reboot HOSTNAME_FQDN", "node-1;rm -rf /")


def test_group_file_parsing():
    assert parse_group_file("# pdu\nn1,n2, n3\n\nn4,n5\n") == [["n1", "n2", "n3"], ["n4", "n5"]]
    with pytest.raises(ConfigError, match="line 1"):
        parse_group_file("n1,$(x)", "pdu")


def test_retry_starts_at_hard():
    assert retry_start_level("soft", 0) == "soft"
    assert retry_start_level("soft", 1) == "hard"
    assert retry_start_level("very_hard", 2) == "very_hard"


async def test_soft_failure_escalates_to_hard(tmp_path):
    marker = tmp_path / "hard"
    table = CommandTable({"reboot": [
        RemoteOp("soft", "test HOSTNAME_SHORT != node-2 || { echo soft failed on HOSTNAME_SHORT >&2; exit 1; }"),
        RemoteOp("hard", f"echo HOSTNAME_SHORT >> {marker}"),
    ]})
    lines, output = collect()
    result = await escalate("reboot", NODES[:3], "soft", table, RebootWindow(10), output=output, command_timeout=5)
    assert sorted(result.ok) == sorted(NODES[:3]) and result.ko == {}
    assert marker.read_text() == "node-2\n"
    assert (3, "   * Performing a soft reboot on node-[1-3].c1.testbed") in lines
    assert (3, "   * Performing a hard reboot on node-2.c1.testbed") in lines


async def test_missing_levels_give_the_kadeploy3_error():
    table = CommandTable({"reboot": [RemoteOp("soft", "false")]})
    lines, output = collect()
    result = await escalate("reboot", NODES[:2], "soft", table, RebootWindow(2), output=output)
    assert result.ok == []
    assert result.ko == {n: "very_hard_reboot command is not provided" for n in NODES[:2]}
    assert (3, "   ! No hard reboot command is defined for node-1.c1.testbed") in lines


async def test_last_error_is_the_commands_stderr():
    table = CommandTable({"power_off": [RemoteOp("hard", "echo first >&2; echo 'BMC unreachable' >&2; exit 3")]})
    result = await escalate("power_off", NODES[:1], "hard", table, RebootWindow(2), levels=("soft", "hard"))
    assert result.ko == {NODES[0]: "BMC unreachable"}


async def test_command_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    sleep_seconds = 30
    table = CommandTable({"reboot": [RemoteOp("soft", f"sleep {sleep_seconds} & echo $! > {pidfile}; wait")]})
    started = time.monotonic()
    result = await escalate("reboot", NODES[:1], "soft", table, RebootWindow(2), levels=("soft",), command_timeout=0.5)
    assert time.monotonic() - started < sleep_seconds / 2  # cut at the timeout, not waited for
    assert result.ko == {NODES[0]: "soft_reboot command timed out after 0.5s"}
    pid = int(pidfile.read_text())
    await asyncio.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


async def test_command_conf_override_wins(tmp_path):
    table = CommandTable(
        {"reboot": [RemoteOp("soft", "false")]},
        {"node-1": {"reboot_soft": f"echo HOSTNAME_FQDN > {tmp_path}/o"}},
    )
    result = await escalate("reboot", NODES[:2], "soft", table, RebootWindow(2), levels=("soft",))
    assert result.ok == [NODES[0]] and list(result.ko) == [NODES[1]]
    assert (tmp_path / "o").read_text() == NODES[0] + "\n"


async def test_reboot_window_bounds_concurrency_and_reuses_slots(tmp_path):
    window = RebootWindow(2)
    # node-1 holds its slot until the five others have all run: only slot reuse lets them
    # flow one after the other through the second slot while node-1 still runs. With
    # batches of two, node-1 would wait beside node-2 for nodes that never start, give up
    # and fail. Shown by order, not by timing, so that a loaded machine cannot flake it.
    ran = tmp_path / "ran"
    ran.write_text("")
    others_ran = f"[ $(wc -l < {ran}) -ge {len(NODES) - 1} ]"
    table = CommandTable({"reboot": [RemoteOp("soft", (
        f"case HOSTNAME_SHORT in node-1) for i in $(seq 400); do {others_ran} && exit 0; sleep 0.05; done; "
        f"echo the others never ran >&2; exit 1;; *) echo HOSTNAME_SHORT >> {ran};; esac"))]})
    result = await escalate("reboot", NODES, "soft", table, window, command_timeout=60)
    assert sorted(result.ok) == sorted(NODES), result.ko
    assert window.peak == 2 and window.current == 0 and window.total == 6
    assert sorted(ran.read_text().split()) == [f"node-{i}" for i in range(2, 7)]


async def test_window_is_shared_by_concurrent_workflows():
    window = RebootWindow(2)
    table = CommandTable({"reboot": [RemoteOp("soft", "sleep 0.3")]})
    results = await asyncio.gather(
        escalate("reboot", NODES[:3], "soft", table, window),
        escalate("reboot", NODES[3:], "soft", table, window),
    )
    assert all(len(r.ok) == 3 for r in results)
    assert window.peak == 2


async def test_min_interval_gate_spaces_commands_to_one_bmc():
    gate = MinIntervalGate(0.3)
    events: list[tuple[str, str, float]] = []

    async def command(key: str) -> None:
        async with gate.hold(key):
            events.append((key, "start", time.monotonic()))
            await asyncio.sleep(0.05)
            events.append((key, "end", time.monotonic()))

    await asyncio.gather(command("bmc-1"), command("bmc-1"), command("bmc-2"))
    order = [(key, kind) for key, kind, _ in events]
    assert order.index(("bmc-2", "start")) < order.index(("bmc-1", "end"))  # bmc-2 does not wait for bmc-1
    bmc_1 = [(kind, stamp) for key, kind, stamp in events if key == "bmc-1"]
    assert [kind for kind, _ in bmc_1] == ["start", "end", "start", "end"]  # one session at a time
    assert bmc_1[2][1] - bmc_1[1][1] >= 0.3  # end of the first to start of the next: the interval


async def test_group_command_runs_once_for_all_members(tmp_path):
    groups = tmp_path / "pdu_groups"
    groups.write_text("node-1.c1.testbed,node-2.c1.testbed,node-3.c1.testbed\nnode-4,node-5\n")
    log = tmp_path / "log"
    table = CommandTable({"reboot": [
        RemoteOp("soft", "false"),
        RemoteOp("hard", f"echo GROUP_SHORT >> {log}", group=str(groups)),
    ]})
    lines, output = collect()
    result = await escalate("reboot", NODES[:5], "soft", table, RebootWindow(5), output=output)
    assert sorted(result.ok) == sorted(NODES[:5])
    assert sorted(log.read_text().splitlines()) == ["node-1,node-2,node-3", "node-4,node-5"]


async def test_incomplete_group_is_skipped_and_failure_copied(tmp_path):
    groups = tmp_path / "pdu"
    groups.write_text("node-1,node-2\nnode-3,node-4\n")
    table = CommandTable({"reboot": [RemoteOp("hard", "exit 1", group=groups)]})
    lines, output = collect()
    result = await escalate("reboot", NODES[:3], "hard", table, RebootWindow(5), levels=("hard",), output=output)
    assert result.ok == []
    assert result.ko[NODES[0]] == result.ko[NODES[1]] == "hard_reboot command exited with status 1"
    assert "not all the nodes of the group are in the operation" in result.ko[NODES[2]]


async def test_group_resets_members_that_succeeded_at_a_lower_level(tmp_path):
    groups = tmp_path / "pdu"
    groups.write_text("node-1,node-2\n")
    log = tmp_path / "log"
    table = CommandTable({"reboot": [
        RemoteOp("soft", "test HOSTNAME_SHORT = node-1"),
        RemoteOp("hard", f"echo GROUP_FQDN >> {log}", group=groups),
    ]})
    result = await escalate("reboot", NODES[:2], "soft", table, RebootWindow(5))
    assert sorted(result.ok) == NODES[:2]
    assert log.read_text() == "node-1.c1.testbed,node-2.c1.testbed\n"


async def test_invalid_start_level_is_a_user_error():
    with pytest.raises(KadeployError, match="Invalid reboot level 'medium'"):
        await escalate("reboot", NODES[:1], "medium", CommandTable({}), RebootWindow(1))


async def test_power_status_returns_stdout():
    table = CommandTable(
        {"power_status": [RemoteOp("soft", "echo HOSTNAME_SHORT is on")]},
        {"node-2.c1.testbed": {"power_status": "echo down >&2; exit 2"}},
    )
    result = await power_status(NODES[:2], table, RebootWindow(4))
    assert result.status == {NODES[0]: "node-1 is on"}
    assert result.ok == [NODES[0]] and result.ko == {NODES[1]: "down"}
    empty = await power_status(NODES[:1], CommandTable({}), RebootWindow(1))
    assert empty.ko == {NODES[0]: "power_status command is not provided"}
