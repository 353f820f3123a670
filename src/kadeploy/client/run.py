"""Run a workflow operation on one or several servers and report it (kadeploy3, kareboot3, kapower3).

Client room. One `WorkflowRunner` per server in its own thread (so `-M`
streams side by side, prefixed `[site] `); the main thread only waits, so
Ctrl-C reaches it and becomes a cancel (DELETE) of every workflow. At the end:
result blocks, merged `-o/-n` files, `--json`, `-s` script, exit status.
A recorded environment is looked up before the launch and its local files
served, as for `-a` (`kadeploy.client.recorded`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from kadeploy.client.errors import EXIT_GENERIC, ClientError, exit_status_of
from kadeploy.client.export import FileExporter
from kadeploy.client.http import Connection
from kadeploy.client.output import (
    Printer,
    json_result,
    append_node_file,
    create_node_file,
    result_lines,
    write_json,
)
from kadeploy.client.recorded import resolve_recorded_environment
from kadeploy.client.session import Session
from kadeploy.client import workflow as workflow_module
from kadeploy.client.workflow import WorkflowOutcome, WorkflowRunner
from kadeploy.errors import KadeployError

JOIN_STEP = 0.2
CANCEL_GRACE = 20.0

ResultFormatter = Callable[[str, Mapping[str, Any], Mapping[str, Any]], list[str]]


@dataclass
class WorkflowRequest:
    """One operation to launch: what, where, with which body and which local files."""

    operation: str                      # "Deployment", "Reboot", "Power operation"
    method: str                         # POST / PUT / GET
    path: str                           # /deployment, /reboot, /power
    params: dict[str, Any]              # body without `nodes` and `client`
    local_files: list[str] = field(default_factory=list)
    secure_export: bool = False
    formatter: ResultFormatter = result_lines


@dataclass
class WorkflowOptions:
    """Reference 2.2 options and our additions that shape the run and its report."""

    wait: bool = True
    dry_run: bool = False
    wid_file: str | None = None
    ok_file: str | None = None
    ko_file: str | None = None
    json_file: str | None = None
    script: str | None = None
    fail_on_ko: bool = False
    progress: bool = False              # --progress: live display, on a terminal only
    debug: bool = False
    poll_interval: float | None = None  # None: kadeploy.client.workflow.POLL_INTERVAL


def _inherited_fd(fd: int = 3) -> int | None:
    """A private copy of fd 3 if the caller left it open when this process started.

    Kadeploy3 writes `-d` output to fd 3 when the caller opened it. That must be
    decided at start-up (this module is imported by every tool before it opens
    anything): later, fd 3 is as likely to be our own HTTP socket, and debug
    lines written there reached the server as a garbled request (HTTP 400).
    """
    try:
        os.fstat(fd)
    except OSError:
        return None
    try:
        return os.dup(fd)
    except OSError:
        return None


_CALLER_DEBUG_FD = _inherited_fd()


def open_debug_printer(fd: int | None = None) -> Printer | None:
    """-d output goes to the caller's fd 3 (Kadeploy3), else inline `[dbg]` lines.

    `fd` overrides the descriptor found at start-up (tests).
    """
    fd = _CALLER_DEBUG_FD if fd is None else fd
    if fd is None:
        return None
    try:
        os.fstat(fd)
    except OSError:
        return None
    return Printer(os.fdopen(fd, "w", closefd=False))


def run_workflows(
    session: Session,
    request: WorkflowRequest,
    nodes: Sequence[str],
    options: WorkflowOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Launch, follow and report; returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    stdin = stdin or sys.stdin
    shares = session.dispatch_nodes(nodes)
    request = resolve_recorded_environment(session, request, stdout)
    exporter = _start_exporter(request, options)
    try:
        return _run(session, request, shares, options, exporter, stdout, stderr, stdin)
    finally:
        if exporter is not None:
            exporter.stop()


def _start_exporter(request: WorkflowRequest, options: WorkflowOptions) -> FileExporter | None:
    if not request.local_files:
        return None
    exporter = FileExporter(secure=request.secure_export)
    for reference in request.local_files:
        exporter.add(reference)
    if not options.wait:
        listing = "\n  ".join(str(path) for path in exporter.files)
        raise ClientError(f"Cannot use --no-wait since some files have to be exported to the server:\n  {listing}")
    exporter.start()
    return exporter


def _run(
    session: Session,
    request: WorkflowRequest,
    shares: list[tuple[Connection, list[str]]],
    options: WorkflowOptions,
    exporter: FileExporter | None,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO,
) -> int:
    # Kadeploy3 has no live display: only when asked for, and only drawn on a terminal
    use_progress = bool(options.progress) and _isatty(stdout) and options.wait and not options.dry_run
    display = None
    if use_progress:
        from kadeploy.client.progress import ProgressDisplay

        display = ProgressDisplay(request.operation, stdout)
    cancel = threading.Event()
    debug_printer = open_debug_printer() if options.debug else None
    runners: list[WorkflowRunner] = []
    for connection, share in shares:
        name = connection.server.name if session.multi else None
        printer = Printer(stdout, name, sink=display.print_line if display else None)
        params = dict(request.params)
        params["nodes"] = share
        if exporter is not None:
            params["client"] = exporter.url(connection.server.hostname)
        if options.dry_run:
            params["dry_run"] = True

        def on_poll(runner: WorkflowRunner, info: dict[str, Any], display: Any = display) -> None:
            if display is not None and not info.get("done"):
                try:
                    display.update(runner.connection.server.name, runner.status(), runner.elapsed(),
                                   states=runner.states())
                except ClientError:
                    pass

        runners.append(
            WorkflowRunner(
                connection, request.operation, request.method, request.path, params, printer,
                debug_printer=debug_printer, wait=options.wait, dry_run=options.dry_run,
                wid_file=options.wid_file, cancel_event=cancel,
                poll_interval=options.poll_interval or workflow_module.POLL_INTERVAL,
                on_poll=on_poll,
            )
        )

    outcomes: dict[int, WorkflowOutcome | None] = {}
    errors: dict[int, BaseException] = {}
    for node_file in (options.ok_file, options.ko_file):
        if node_file and options.wait:
            create_node_file(node_file)
    results = threading.Lock()
    first_error: list[int] = []

    def fail(index: int, runner: WorkflowRunner, error: BaseException) -> None:
        """client.rb `error`: the first error is printed at once and ends the whole run (`Client.kill`
        stops every server's thread and DELETEs its workflow, then `exit!`); later ones are not seen."""
        with results:
            if first_error:
                return
            first_error.append(index)
            errors[index] = error
            for other in runners:
                if other is not runner:
                    other.printer.silence()
            if display is None:  # under the live table, printed once it is gone
                stderr.write(runner.printer.prefixed(str(error)) + "\n")
                stderr.flush()
            cancel.set()

    def work(index: int, runner: WorkflowRunner) -> None:
        try:
            outcome = outcomes[index] = runner.run()
            # client.rb `launch`: each server's thread runs `run` then `result` at once, so with -M each
            # result block (and its -o/-n lines) comes when that server finishes, not when all have
            if outcome is not None and not outcome.cancelled and not outcome.info.get("error") \
                    and not cancel.is_set() and not first_error:
                with results:
                    runner.printer.lines(request.formatter(request.operation, outcome.info, outcome.states))
                    if options.ok_file:
                        append_node_file(options.ok_file, outcome.ok_nodes)
                    if options.ko_file:
                        append_node_file(options.ko_file, outcome.ko_nodes)
        except (ClientError, KadeployError, OSError) as error:
            fail(index, runner, error)
        except Exception as error:  # noqa: BLE001 - a thread must report, never die silently
            fail(index, runner, ClientError(f"Unexpected client failure: {type(error).__name__}: {error}"))

    threads = [
        threading.Thread(target=work, args=(index, runner), name=f"kadeploy-{index}", daemon=True)
        for index, runner in enumerate(runners)
    ]
    interrupted = False
    echo = None
    if display is not None:
        echo = _echo_off(stdin)
        display.__enter__()
    try:
        for thread in threads:
            thread.start()
        # ENTER works with the live display too: the status lines go through the
        # printers, hence above the table (the display is on precisely on a terminal)
        _start_status_reader(runners, stdin, options.wait)
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(JOIN_STEP)
        except KeyboardInterrupt:
            interrupted = True
            stdout.write("\nSIGINT trapped\n")
            stdout.flush()
            cancel.set()
            deadline = time.monotonic() + CANCEL_GRACE
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        if display is not None:
            display.__exit__(None, None, None)
        _restore_echo(stdin, echo)

    if first_error:
        index = first_error[0]
        if display is not None:
            stderr.write(runners[index].printer.prefixed(str(errors[index])) + "\n")
            stderr.flush()
        return exit_status_of(errors[index])
    if interrupted:
        return EXIT_GENERIC
    finished = [outcome for outcome in (outcomes.get(i) for i in range(len(runners))) if outcome]
    return _report_files(request, finished, options, stdout) if finished else 0


def _report_files(request: WorkflowRequest, outcomes: list[WorkflowOutcome], options: WorkflowOptions,
                  stdout: TextIO) -> int:
    """After every server: the JSON report, the -s script (client.rb `launch`, after the joins), --fail-on-ko."""
    ko_nodes = [node for outcome in outcomes for node in outcome.ko_nodes]
    if options.json_file:
        documents = [
            json_result(request.operation, o.wid, o.server, o.info, o.states, o.elapsed) for o in outcomes
        ]
        write_json(options.json_file, documents[0] if len(documents) == 1 else _merge_json(documents))
    if options.script:
        stdout.write(f"\nRunning {options.script}\n")
        stdout.flush()
        try:
            succeeded = subprocess.run([options.script], check=False).returncode == 0
        except OSError:
            succeeded = False
        stdout.write("\nSuccess !\n" if succeeded else "\nFail !\n")
        stdout.flush()
    if options.fail_on_ko and ko_nodes:
        return EXIT_GENERIC
    return 0


def _merge_json(documents: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "operation": documents[0]["operation"],
        "servers": {doc["server"]: doc["wid"] for doc in documents},
        "error": any(doc["error"] for doc in documents),
        "time": max(doc["time"] for doc in documents),
        "ok": [], "ko": [], "nodes": {},
    }
    for doc in documents:
        merged["ok"] += doc["ok"]
        merged["ko"] += doc["ko"]
        for node, entry in doc["nodes"].items():
            merged["nodes"][node] = {**entry, "server": doc["server"]}
    return merged


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _echo_off(stdin: TextIO) -> list[Any] | None:
    """Stop the terminal echoing ENTER under the live table; returns the settings to restore.

    The echoed newline moves the cursor behind the display's back, which leaves
    a stale copy of the table's first line on the screen at each key press.
    """
    if not _isatty(stdin):
        return None
    try:
        saved = termios.tcgetattr(stdin.fileno())
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(stdin.fileno(), termios.TCSANOW, quiet)
        return saved
    except (OSError, ValueError, termios.error):
        return None


def _restore_echo(stdin: TextIO, saved: list[Any] | None) -> None:
    if saved is None:
        return
    try:
        termios.tcsetattr(stdin.fileno(), termios.TCSANOW, saved)
    except (OSError, ValueError, termios.error):
        pass


def _start_status_reader(runners: list[WorkflowRunner], stdin: TextIO, enabled: bool) -> None:
    """ENTER on a terminal prints the live status of every workflow (Kadeploy3 behaviour).

    Only when stdin is a terminal: a script feeding stdin from a file or a pipe
    must not get status blocks in its output for each line it happens to send.
    """
    if not enabled or not _isatty(stdin):
        return

    def read() -> None:
        last = 0.0
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError):
                return
            if line == "":
                return
            if time.monotonic() - last < 1.0:
                continue
            last = time.monotonic()
            for runner in runners:
                try:
                    runner.printer.lines(runner.status_lines())
                except ClientError as error:
                    runner.printer.line(f"Cannot get the status: {error.message}")

    threading.Thread(target=read, name="kadeploy-status", daemon=True).start()
