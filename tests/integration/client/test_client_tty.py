"""kadeploy3 on a terminal and off it, against a real kadeploy3d on a fake testbed.

Why: the live progress display (issue #7) and ENTER printing the status
(reference 1.5) only exist when the client talks to a terminal, which no
in-process test sees. Here `kadeploy3` runs in a pseudo-terminal; its output
is fed to `pyte`, a terminal emulator, so the assertions are on what a user
sees on the screen while the deployment runs, not on escape sequences. The
same deployment with stdout a pipe must print Kadeploy3's plain text.

The fake testbed has its own directory and ports (ssh, marker, server) so it
can run beside other fake testbeds on the host: all of them put their nodes
on the same 127.1.x.y addresses.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.requirements import require  # noqa: E402

require("pyte")
import pyte  # noqa: E402

from kadeploy_testbed.fake import harness  # noqa: E402
from kadeploy_testbed.fake.settings import FakeSettings  # noqa: E402

NODES = 3
BOOT_TIME = "3-4"           # long enough to press ENTER during the first macro-step
SSH_PORT = 2422
MARKER_PORT = 25501
SERVER_PORT = 25500
ROWS, COLUMNS = 50, 150
DEPLOY_TIMEOUT = 60.0
MACRO_STEPS = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")

pytestmark = pytest.mark.slow


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Fakebed:
    settings: FakeSettings
    server: harness.Server
    nodes: list[str]
    env_file: Path

    def environ(self) -> dict[str, str]:
        """The client's environment: this testbed's client.conf, a plain xterm, no colour/size overrides."""
        env = {key: value for key, value in os.environ.items()
               if key not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
        env.update(KADEPLOY3_CONFIG_DIR=str(self.settings.path / "etc"), TERM="xterm-256color", USER="root")
        return env

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "kadeploy.cli.kadeploy3", "-a", str(self.env_file)]
        for node in self.nodes:
            args += ["-m", node]
        return args


@pytest.fixture(scope="module")
def fakebed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakebed]:
    busy = [port for port in (SSH_PORT, SERVER_PORT) if not _port_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: another run of this test, or something else, holds them")
    directory = tmp_path_factory.mktemp("fake-tty")
    settings = harness.up(directory, NODES, server_port=SERVER_PORT, boot_time=BOOT_TIME, seed=5,
                          ssh_port=SSH_PORT, marker_port=MARKER_PORT)
    server = None
    try:
        assert (settings.ssh_port, settings.marker_port) == (SSH_PORT, MARKER_PORT)
        server = harness.start_server(settings)
        environment, _ = harness.tiny_environment(settings)
        description = {key: value for key, value in environment.items() if key != "kind"}
        env_file = directory / "tiny.yaml"
        env_file.write_text(yaml.safe_dump(description))
        yield Fakebed(settings, server, (directory / "nodes").read_text().split(), env_file)
    finally:
        if server is not None:
            server.stop()
        harness.down(directory)


# -- kadeploy3 in a pseudo-terminal ----------------------------------------------------------


@dataclass
class TerminalRun:
    """What a user saw: every screen state (a list of lines) and the raw bytes."""

    screens: list[list[str]] = field(default_factory=list)
    raw: bytes = b""
    returncode: int | None = None

    @property
    def final(self) -> list[str]:
        return self.screens[-1] if self.screens else []

    def text(self) -> str:
        return "\n".join(self.final)


def run_in_terminal(fakebed: Fakebed, react: Callable[[list[str], Callable[[bytes], None]], None] | None = None,
                    timeout: float = DEPLOY_TIMEOUT) -> TerminalRun:
    """Run `kadeploy3 --progress` on a pty; `react(screen, write)` is called on each new screen.

    The live table is drawn only when asked for (Kadeploy3 has none: scripts run through
    `ssh -tt` must see its plain text), so these runs ask for it.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    run = TerminalRun()
    process = subprocess.Popen([*fakebed.command(), "--progress"], stdin=slave, stdout=slave, stderr=slave,
                               env=fakebed.environ(), start_new_session=True)
    os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"kadeploy3 not done after {timeout:g}s; screen:\n" + "\n".join(screen.display))
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the slave side
                break
            if not chunk:
                break
            run.raw += chunk
            stream.feed(chunk)
            lines = [line.rstrip() for line in screen.display]
            run.screens.append(lines)
            if react is not None:
                react(lines, lambda data: os.write(master, data))
        run.returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(master)
    return run


# -- reading the screen --------------------------------------------------------------------

ROW = re.compile(r"[│┃|]\s*(?P<server>\S+)\s*[│┃|]\s*(?P<macro>\w+)\s*[│┃|]\s*(?P<ok>\d+)\s*[│┃|]\s*(?P<ko>\d+)\s*"
                 r"[│┃|]\s*(?P<running>\d+)\s*[│┃|]\s*(?P<step>\d+)s\s*[│┃|]\s*(?P<elapsed>\d+)s\s*[│┃|]")


@dataclass(frozen=True)
class ProgressRow:
    macro: str
    ok: int
    ko: int
    running: int
    elapsed: int


def progress_rows(screen: list[str]) -> list[ProgressRow]:
    """The rows of the live table on one screen (empty when the table is not shown)."""
    rows = []
    for line in screen:
        match = ROW.search(line)
        if match:
            rows.append(ProgressRow(match["macro"], int(match["ok"]), int(match["ko"]), int(match["running"]),
                                    int(match["elapsed"])))
    return rows


def macro_kind(name: str) -> str | None:
    """`SetDeploymentEnvUntrusted` -> `SetDeploymentEnv` (the implementation is the suffix)."""
    return next((kind for kind in MACRO_STEPS if name.startswith(kind)), None)


def result_block(lines: list[str]) -> list[str]:
    """From `The deployment is successful on nodes` to the last non-empty line."""
    text = [line for line in lines if line.strip()]
    for index, line in enumerate(text):
        if line.startswith("The deployment is successful on nodes"):
            return text[index:]
    return []


STATUS_HEADER = re.compile(r"Deployment status \(\d+s\):")


def status_block(screen: list[str]) -> list[str] | None:
    """The lines between `---` / `Deployment status (Ns):` and the closing `---`, once all on screen."""
    for index, line in enumerate(screen):
        if STATUS_HEADER.fullmatch(line) and index > 0 and screen[index - 1] == "---":
            if "---" in screen[index + 1:]:
                return screen[index + 1:screen.index("---", index + 1)]
    return None


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def terminal_run(fakebed: Fakebed) -> tuple[TerminalRun, list[int]]:
    """One deployment on a terminal; ENTER is pressed once the table shows nodes in progress.

    Returns the run and the indexes of the screens at which ENTER was written.
    """
    pressed: list[int] = []
    seen = {"screens": 0}

    def react(screen: list[str], write: Callable[[bytes], None]) -> None:
        seen["screens"] += 1
        if not pressed and any(row.running > 0 for row in progress_rows(screen)):
            write(b"\n")
            pressed.append(seen["screens"] - 1)

    return run_in_terminal(fakebed, react), pressed


def test_live_display_counts_nodes_per_macro_step_and_ends_with_the_result(fakebed, terminal_run):
    run, _ = terminal_run
    assert run.returncode == 0, run.text()
    tables = [rows for rows in (progress_rows(screen) for screen in run.screens) if rows]
    assert tables, "no progress table was ever on the screen:\n" + run.text()
    # every row's counts stay within the nodes deployed
    for rows in tables:
        for row in rows:
            assert row.ok + row.ko + row.running <= NODES, row
    shown = {macro_kind(row.macro) for rows in tables for row in rows}
    assert {"SetDeploymentEnv", "BootNewEnv"} <= shown, shown
    for rows in tables:  # macro-steps in workflow order, each once
        kinds = [MACRO_STEPS.index(macro_kind(row.macro)) for row in rows]
        assert kinds == sorted(set(kinds)), rows
    # the display follows the nodes: all in progress in the first macro-step ...
    first = [row for rows in tables for row in rows if macro_kind(row.macro) == "SetDeploymentEnv"]
    assert any(row.running == NODES and row.ok == 0 for row in first), first
    # ... which stays on the table with all of them OK while the last one runs
    assert any(any(row.ok == NODES and row.running == 0 for row in rows if macro_kind(row.macro) == "SetDeploymentEnv")
               and any(row.running > 0 for row in rows if macro_kind(row.macro) == "BootNewEnv")
               for rows in tables), tables[-1]
    assert all(row.ko == 0 for rows in tables for row in rows)
    # the elapsed time moves
    elapsed = [row.elapsed for rows in tables for row in rows]
    assert max(elapsed) > min(elapsed), elapsed
    # the table is transient: the final screen is the Kadeploy3 text ending with the result block
    final = run.final
    assert not progress_rows(final), run.text()
    # ... and left nothing behind, not even at the place where ENTER was pressed
    assert not any("Deployment progress" in line for line in final), run.text()
    assert any(re.fullmatch(r"Deployment #D-\S+ started", line) for line in final), run.text()
    assert any(re.fullmatch(r"Deployment #D-\S+ done", line) for line in final), run.text()
    assert result_block(final) == ["The deployment is successful on nodes", *fakebed.nodes], run.text()


def test_enter_prints_the_live_status_during_the_deployment(fakebed, terminal_run):
    run, pressed = terminal_run
    assert pressed, "the table never showed nodes in progress, ENTER was not pressed:\n" + run.text()
    blocks = [block for block in (status_block(screen) for screen in run.screens[pressed[0]:]) if block]
    assert blocks, "no status block after ENTER:\n" + run.text()
    block = blocks[0]
    # `  [<macro>-<micro>] ~<s>s (<state>)` headers, each followed by its nodes
    headers = [line for line in block if re.fullmatch(r"  \[\w+-\w+\] ~\d+(\.\d+)?s \((\*\*|OK|KO)\)", line)]
    assert headers, block
    assert any(macro_kind(line.strip()[1:].split("-")[0]) for line in headers), headers
    listed = {line.strip() for line in block if line.startswith("     ")}
    assert listed == set(fakebed.nodes), block
    # nothing was printed before ENTER: the status came from the key press
    before = run.screens[:pressed[0] + 1]
    assert not any("Deployment status (" in line for screen in before for line in screen)


def test_without_a_terminal_the_plain_kadeploy3_text_is_printed(fakebed):
    completed = subprocess.run(fakebed.command(), stdin=subprocess.DEVNULL, capture_output=True,
                               env=fakebed.environ(), timeout=DEPLOY_TIMEOUT)
    out = completed.stdout.decode()
    assert completed.returncode == 0, out + completed.stderr.decode()
    assert "\x1b" not in out and "\r" not in out, repr(out[:500])
    lines = out.splitlines()
    assert re.fullmatch(r"Deployment #D-\S+ started", lines[0]), lines
    assert any(re.fullmatch(r"Deployment #D-\S+ done", line) for line in lines), lines
    assert result_block(lines) == ["The deployment is successful on nodes", *fakebed.nodes], out
    assert "progress" not in out and not progress_rows(lines), out
    # the server's log lines (the macro-steps' names) are in the text
    assert all(any(kind in line for line in lines) for kind in MACRO_STEPS), out
