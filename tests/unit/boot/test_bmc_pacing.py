"""Per-BMC pacing and retries of refused BMC sessions (issue 20, point 7).

Commands are real shell commands that print what ipmitool prints when a BMC
refuses a session, failing a given number of times before they succeed; the
tests count how often each ran and what the escalation made of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from kadeploy.boot.bmcsession import SessionRetry, session_refused
from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.drivers import IPMIDriver, PowerDriverError, SessionRefused
from kadeploy.boot.power import escalate, power_status
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.config.server import ServerConfig
from kadeploy.config.validation import validate_model
from kadeploy.errors import ConfigError

NODES = [f"node-{i}.c1.testbed" for i in range(1, 5)]
NO_SLOT = ("Error in open session response message : insufficient resources for session\\n\\n"
           "Error: Unable to establish IPMI v2 / RMCP+ session")
FAST = SessionRetry(retries=3, backoff=0.01)


def flaky(counter_dir: Path, failures: int, stderr: str = NO_SLOT) -> str:
    """A command that fails `failures` times per node with `stderr`, then succeeds; each run
    appends a line to <counter_dir>/<node>."""
    count = f"{counter_dir}/HOSTNAME_SHORT"
    return (f"echo run >> {count}; "
            f"test $(wc -l < {count}) -gt {failures} || {{ printf '{stderr}\\n' >&2; exit 1; }}")


def runs(counter_dir: Path, node: str) -> int:
    path = counter_dir / node.split(".")[0]
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- what counts as a refused session ------------------------------------------------------

@pytest.mark.parametrize("stderr", [
    "Error: Unable to establish IPMI v2 / RMCP+ session",
    "Error in open session response message : insufficient resources for session\n\n"
    "Error: Unable to establish IPMI v2 / RMCP+ session",
    "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\n"
    "Error: Unable to establish IPMI v2 / RMCP+ session",
    "Error: Unable to establish LAN session",
])
def test_busy_or_full_bmc_is_a_refused_session(stderr: str) -> None:
    assert session_refused(stderr)


@pytest.mark.parametrize("stderr", [
    "RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session",
    "> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session",
    "Error in open session response message : invalid role\n\nError: Unable to establish IPMI v2 / RMCP+ session",
    "Error in open session response message : no matching cipher suite\n"
    "Error: Unable to establish IPMI v2 / RMCP+ session",
    "Set Chassis Power Control to Down/Off failed: Command not supported in present state",
    "ssh: connect to host node-1 port 22: No route to host",
])
def test_permanent_or_other_errors_are_not_refused_sessions(stderr: str) -> None:
    assert not session_refused(stderr)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    retry = SessionRetry(retries=6, backoff=1.0, max_backoff=5.0)
    rng = random.Random(7)
    for attempt, base in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        delays = [retry.delay(attempt, rng) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.2  # jittered, not all equal
    with pytest.raises(ValueError):
        SessionRetry(retries=-1)


# -- escalation with retries ---------------------------------------------------------------

async def test_refused_sessions_are_retried_until_the_command_succeeds(tmp_path: Path) -> None:
    table = CommandTable({"power_off": [RemoteOp("hard", flaky(tmp_path, failures=2))]})
    gate = MinIntervalGate(0.0, retry=FAST)
    result = await escalate("power_off", NODES, "hard", table, RebootWindow(10), gate=gate, command_timeout=5)
    assert sorted(result.ok) == sorted(NODES) and result.ko == {}
    assert [runs(tmp_path, n) for n in NODES] == [3, 3, 3, 3]


async def test_retries_are_bounded_and_the_error_says_how_many_attempts(tmp_path: Path) -> None:
    table = CommandTable({"power_on": [RemoteOp("hard", flaky(tmp_path, failures=100))]})
    gate = MinIntervalGate(0.0, retry=FAST)
    result = await escalate("power_on", NODES[:1], "hard", table, RebootWindow(10), gate=gate,
                            levels=("hard",), command_timeout=5)
    assert result.ok == []
    assert result.ko == {NODES[0]: "Error: Unable to establish IPMI v2 / RMCP+ session (4 attempts)"}
    assert runs(tmp_path, NODES[0]) == 4  # 1 + 3 retries


async def test_wrong_password_and_other_failures_run_once_then_escalate(tmp_path: Path) -> None:
    wrong = "> RAKP 2 HMAC is invalid\\nError: Unable to establish IPMI v2 / RMCP+ session"
    table = CommandTable({"reboot": [RemoteOp("hard", flaky(tmp_path / "a", 100, wrong)),
                                     RemoteOp("very_hard", flaky(tmp_path / "b", 100, "BMC unreachable"))]})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gate = MinIntervalGate(0.0, retry=FAST)
    result = await escalate("reboot", NODES[:1], "hard", table, RebootWindow(10), gate=gate, command_timeout=5)
    assert result.ko == {NODES[0]: "BMC unreachable"}
    assert runs(tmp_path / "a", NODES[0]) == 1 and runs(tmp_path / "b", NODES[0]) == 1


async def test_without_a_retry_policy_a_refused_session_fails_at_once(tmp_path: Path) -> None:
    table = CommandTable({"power_on": [RemoteOp("hard", flaky(tmp_path, failures=1))]})
    result = await escalate("power_on", NODES[:1], "hard", table, RebootWindow(10), gate=MinIntervalGate(0.0),
                            levels=("hard",), command_timeout=5)
    assert result.ko == {NODES[0]: "Error: Unable to establish IPMI v2 / RMCP+ session"}
    assert runs(tmp_path, NODES[0]) == 1


async def test_power_status_is_retried_too(tmp_path: Path) -> None:
    command = flaky(tmp_path, failures=1) + "; echo Chassis Power is on"
    table = CommandTable({"power_status": [RemoteOp("soft", command)]})
    result = await power_status(NODES[:2], table, RebootWindow(10), gate=MinIntervalGate(0.0, retry=FAST))
    assert result.status == {n: "Chassis Power is on" for n in NODES[:2]}


async def test_waiting_for_a_retry_holds_neither_the_bmc_nor_the_reboot_window(tmp_path: Path) -> None:
    # one window slot; node-1 is refused once and backs off 0.5 s: node-2 runs meanwhile
    stamps = tmp_path / "stamps"
    command = (f"echo HOSTNAME_SHORT $(date +%s.%N) >> {stamps}; " + flaky(tmp_path, failures=1)).replace(
        f"{tmp_path}/HOSTNAME_SHORT", f"{tmp_path}/count-HOSTNAME_SHORT")
    table = CommandTable({"power_on": [RemoteOp("hard", command)]})
    gate = MinIntervalGate(0.0, retry=SessionRetry(retries=2, backoff=1.0))
    # the second node's command is not refused: it is run with a counter already past the failure
    (tmp_path / "count-node-2").write_text("run\n")
    began = time.monotonic()
    result = await escalate("power_on", NODES[:2], "hard", table, RebootWindow(1), gate=gate,
                            levels=("hard",), command_timeout=5)
    assert sorted(result.ok) == NODES[:2]
    order = [line.split()[0] for line in stamps.read_text().splitlines()]
    assert order == ["node-1", "node-2", "node-1"], order
    assert time.monotonic() - began >= 0.5


# -- the per-BMC gate -------------------------------------------------------------------

async def test_gate_allows_as_many_commands_per_bmc_as_sessions() -> None:
    for sessions in (1, 2, 3):
        gate = MinIntervalGate(0.0, sessions=sessions)

        async def command(key: str) -> None:
            async with gate.hold(key):
                await asyncio.sleep(0.05)

        await asyncio.gather(*(command("bmc-1") for _ in range(6)), *(command("bmc-2") for _ in range(2)))
        assert gate.peak == sessions
        assert gate.current == {"bmc-1": 0, "bmc-2": 0}
    with pytest.raises(ValueError):
        MinIntervalGate(1.0, sessions=0)


# -- the built-in IPMI driver ------------------------------------------------------------

def fake_ipmitool(directory: Path, failures: int, stderr: str) -> Path:
    """An `ipmitool` that fails `failures` times with `stderr`, then succeeds; runs counted in <directory>/bmc."""
    directory.mkdir(exist_ok=True)
    script = directory / "ipmitool"
    script.write_text(f"#!/bin/sh\n{flaky(directory, failures, stderr).replace('HOSTNAME_SHORT', 'bmc')}\n")
    script.chmod(0o755)
    return script


async def test_ipmi_driver_tells_a_refused_session_from_a_wrong_password(tmp_path: Path) -> None:
    full = fake_ipmitool(tmp_path / "full", 1, NO_SLOT)
    with pytest.raises(SessionRefused, match="insufficient|Unable to establish"):
        await IPMIDriver("bmc-1", "admin", "pw", ipmitool=str(full)).power("on", 5)
    wrong = fake_ipmitool(tmp_path / "wrong", 1, "RAKP 2 HMAC is invalid\\nError: Unable to establish IPMI v2 / RMCP+ session")
    with pytest.raises(PowerDriverError) as error:
        await IPMIDriver("bmc-1", "admin", "pw", ipmitool=str(wrong)).power("on", 5)
    assert not isinstance(error.value, SessionRefused)


async def test_ipmi_driver_refusals_are_retried(tmp_path: Path) -> None:
    ipmitool = fake_ipmitool(tmp_path, 2, NO_SLOT)
    table = CommandTable({"power_on": [RemoteOp("hard", driver=lambda node: IPMIDriver(
        node, "admin", "pw", ipmitool=str(ipmitool)))]})
    result = await escalate("power_on", NODES[:1], "hard", table, RebootWindow(10),
                            gate=MinIntervalGate(0.0, retry=FAST), levels=("hard",), command_timeout=5)
    assert result.ok == NODES[:1]
    assert runs(tmp_path, "bmc") == 3


# -- configuration ------------------------------------------------------------------------

MINIMAL = {
    "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
    "cache": {"size": 1000},
    "pxe": {"dhcp": {"repository": "/srv/tftp"}},
}


def _server(windows: dict | None = None, warnings: list[str] | None = None) -> ServerConfig:
    data = dict(MINIMAL, **({"windows": windows} if windows is not None else {}))
    server, found = validate_model(ServerConfig, data, "server.conf", context={"config_dir": Path("/etc/kadeploy3")})
    if warnings is not None:
        warnings.extend(found)
    return server


def test_windows_bmc_defaults_and_kadeploy3_windows_still_accepted() -> None:
    server = _server({"reboot": {"size": 10, "sleep_time": 5}, "check": {"size": 20}})
    bmc = server.windows.bmc
    assert (bmc.sessions, bmc.interval, bmc.retries, bmc.backoff) == (1, 1.0, 4, 1.0)
    server = _server({"bmc": {"sessions": 2, "interval": 0.5, "retries": 0, "backoff": 3}})
    assert (server.windows.bmc.sessions, server.windows.bmc.retries) == (2, 0)


def test_windows_bmc_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="windows/bmc/sessions"):
        _server({"bmc": {"sessions": 0}})
    warnings: list[str] = []
    _server({"bmc": {"retry": 3}}, warnings)  # unknown keys are warnings, as everywhere in server.conf
    assert any("windows/bmc/retry" in warning for warning in warnings), warnings
