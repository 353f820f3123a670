"""The polling protocol every workflow tool uses (reference 1.5).

Client room. POST/PUT the operation, print `<Operation> #<wid> started`, then
every second GET the workflow, its new log lines (and debug lines with -d),
print them merged by timestamp, until `done`; then GET error (if any), GET
state, DELETE, and hand the result back. A `threading.Event` is the cancel
switch (Ctrl-C in the main thread sets it): the runner DELETEs the workflow,
which kills it on the server and releases the nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadeploy.client.errors import ClientError
from kadeploy.client.http import Connection
from kadeploy.client.output import Printer, merge_log_lines, status_lines

POLL_INTERVAL = 1.0


@dataclass
class WorkflowOutcome:
    """What a finished (or cancelled) workflow left: final info, per-node states."""

    wid: str | None
    server: str | None
    info: dict[str, Any] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    error: ClientError | None = None
    elapsed: float = 0.0

    @property
    def ok_nodes(self) -> list[str]:
        nodes = self.info.get("nodes")
        return list(nodes.get("ok") or []) if isinstance(nodes, Mapping) else []

    @property
    def ko_nodes(self) -> list[str]:
        nodes = self.info.get("nodes")
        return list(nodes.get("ko") or []) if isinstance(nodes, Mapping) else []


class Cancelled(Exception):
    """The user asked to stop (Ctrl-C); the workflow has been deleted on the server."""


class WorkflowRunner:
    """Launch one workflow on one server and follow it to the end."""

    def __init__(
        self,
        connection: Connection,
        operation: str,
        method: str,
        path: str,
        params: Mapping[str, Any],
        printer: Printer,
        *,
        debug_printer: Printer | None = None,
        wait: bool = True,
        dry_run: bool = False,
        wid_file: str | None = None,
        cancel_event: threading.Event | None = None,
        poll_interval: float = POLL_INTERVAL,
        on_poll: Callable[[WorkflowRunner, dict[str, Any]], None] | None = None,
    ) -> None:
        self.connection = connection
        self.operation = operation
        self.method = method
        self.path = path
        self.params = dict(params)
        self.printer = printer
        self.debug_printer = debug_printer
        self.wait = wait
        self.dry_run = dry_run
        self.wid_file = wid_file
        self.cancel_event = cancel_event or threading.Event()
        self.poll_interval = poll_interval
        self.on_poll = on_poll
        self.wid: str | None = None
        self.resources: dict[str, Any] | None = None
        self.start_time: float | None = None
        self.done = False

    # -- resources --------------------------------------------------------------

    def resource(self, key: str) -> str:
        """Path of a workflow sub-resource from the launch answer (falls back to `<resource>/<key>`)."""
        assert self.resources is not None
        value = self.resources.get(key)
        if isinstance(value, str):
            return value
        return f"{self.resources['resource'].rstrip('/')}/{key}"

    # -- the protocol -------------------------------------------------------------

    def launch(self) -> dict[str, Any] | None:
        """Send the operation; returns the launch answer (None for a dry run)."""
        if self.method in ("GET", "DELETE"):
            # GET /power?nodes=... starts a power-status workflow: parameters go in the query.
            answer = self.connection.request(self.method, self.path, params=self.params)
        else:
            answer = self.connection.request(self.method, self.path, body=self.params)
        if self.dry_run:
            return None
        if not isinstance(answer, Mapping) or "wid" not in answer or "resources" not in answer:
            raise ClientError(f"Invalid answer from the server to {self.method} {self.path}: {answer!r}")
        self.wid = str(answer["wid"])
        self.resources = dict(answer["resources"])
        self.start_time = time.monotonic()
        if self.wid_file:
            Path(self.wid_file).write_text(self.wid)
        return dict(answer)

    def run(self) -> WorkflowOutcome | None:
        """The whole life of the workflow; None when not waiting (dry run, --no-wait)."""
        if self.launch() is None:
            return None
        assert self.resources is not None
        if not self.wait:
            self.printer.line(f"{self.wid} {self.resources['resource']}")
            return None
        self.printer.line(f"{self.operation} #{self.wid} started")
        try:
            info = self._follow()
        except Cancelled:
            return WorkflowOutcome(self.wid, self.connection.server.name, cancelled=True, elapsed=self.elapsed())
        except ClientError:
            self._delete_quietly()
            raise
        if info.get("error"):
            try:
                self.connection.get(self.resource("error"))
            except ClientError as error:
                self._delete_quietly()
                self.done = True
                raise error
        self.printer.line(f"{self.operation} #{self.wid} done")
        self.printer.line("")
        states = self.connection.get(self.resource("state"))
        self.connection.delete(self.resource("resource"))
        self.done = True
        return WorkflowOutcome(
            self.wid,
            self.connection.server.name,
            info=dict(info),
            states=dict(states) if isinstance(states, Mapping) else {},
            elapsed=self.elapsed(),
        )

    def _follow(self) -> dict[str, Any]:
        debug_wanted = bool(self.params.get("debug"))
        while True:
            self._check_cancel()
            info = self.connection.get(self.resource("resource"))
            if not isinstance(info, Mapping):
                raise ClientError(f"Invalid workflow information from the server: {info!r}")
            logs: list[str] = []
            debugs: list[str] = []
            if info.get("logs"):
                logs.append(str(self.connection.get(self.resource("log")) or ""))
            if debug_wanted and info.get("debugs"):
                debugs.append(str(self.connection.get(self.resource("debug")) or ""))
            if self.debug_printer is not None and debugs:
                self.debug_printer.lines(merge_log_lines([], debugs))
                debugs = []
            self.printer.lines(merge_log_lines(logs, debugs))
            if self.on_poll is not None:
                self.on_poll(self, dict(info))
            if info.get("done"):
                return dict(info)
            if self.cancel_event.wait(self.poll_interval):
                self._check_cancel()

    def _check_cancel(self) -> None:
        if self.cancel_event.is_set():
            self._delete_quietly()
            self.printer.line(f"{self.operation} #{self.wid} cancelled")
            raise Cancelled()

    def _delete_quietly(self) -> None:
        """Cancel/forget the workflow on the server; errors here must not hide the first one."""
        if self.wid is None or self.resources is None or self.done:
            return
        try:
            self.connection.delete(self.resource("resource"), timeout=10.0)
        except ClientError:
            pass
        self.done = True

    # -- live status -------------------------------------------------------------

    def elapsed(self) -> float:
        return 0.0 if self.start_time is None else time.monotonic() - self.start_time

    def status(self) -> dict[str, Any] | None:
        """A /status snapshot, or None when the workflow is not running."""
        if self.wid is None or self.resources is None or self.done:
            return None
        answer = self.connection.get(self.resource("status"))
        return dict(answer) if isinstance(answer, Mapping) else None

    def states(self) -> dict[str, Any] | None:
        """A /state snapshot (per node: macro, micro, state), or None when the workflow is not running."""
        if self.wid is None or self.resources is None or self.done:
            return None
        answer = self.connection.get(self.resource("state"))
        return dict(answer) if isinstance(answer, Mapping) else None

    def status_lines(self) -> list[str]:
        """What ENTER shows (Kadeploy3's display_status)."""
        if self.wid is None:
            return ["---", f"{self.operation} did not start at the moment", "---"]
        if self.done:
            return ["---", f"{self.operation} status ({int(self.elapsed())}s): done", "---"]
        return status_lines(self.operation, self.status(), int(self.elapsed()))
