"""server.conf `logs/logfile` and `logs/debugfile` (room `server`, reference 3 and 8).

The deployment log file gets, when an operation ends, one CSV line per node
with the fields of the `log` table in Kadeploy3's order (`Logger#dump_to_file`):
`wid,hostname,user,step1,step2,step3,timeout_step1..3,retry_step1..3,start,
step1_duration..3,env,anonymous_env,md5,success,error`. The debug file is a
copy of what clients are shown, every line prefixed `<wid>|<user> -> ` and
kept when its level is at most `verbosity/logs` (Kadeploy3's `FileOutput`).

Each file is opened once in append mode and written by its own thread: the
event loop only queues text (the records of an ended operation are even
formatted by that thread), so a 4,000-node workflow ending or a slow /var/log
never stalls the API. Lines queued together are written with
one `write` under `flock`, as Kadeploy3 locks the file (several servers may
share it). SIGHUP reopens the files after logrotate renamed them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("kadeploy.server")

LOG_FIELDS = ("wid", "hostname", "user", "step1", "step2", "step3", "timeout_step1", "timeout_step2",
              "timeout_step3", "retry_step1", "retry_step2", "retry_step3", "start", "step1_duration",
              "step2_duration", "step3_duration", "env", "anonymous_env", "md5", "success", "error")
_NUMERIC = {"timeout_step1", "timeout_step2", "timeout_step3", "retry_step1", "retry_step2", "retry_step3",
            "start", "step1_duration", "step2_duration", "step3_duration"}
_REOPEN = object()
_STOP = object()
CLOSE_TIMEOUT = 10.0


def open_append(path: Path) -> int:
    """The file's descriptor, created 0644 if missing, every write going to its end."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class AppendFile:
    """A file kept open in append mode, written by one background thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failing = False

    def open(self) -> None:
        """Open now (an unwritable file is reported by the caller at startup) and start the writer."""
        self._fd = open_append(self.path)
        self._thread = threading.Thread(target=self._run, name=f"logfile {self.path.name}", daemon=True)
        self._thread.start()

    def write(self, text: str | Callable[[], str]) -> None:
        """Queue `text` (whole lines), or a function the writer thread calls for it; never blocks."""
        if self._thread is not None and text:
            self._queue.put(text)

    def reopen(self) -> None:
        """Reopen by name after what is queued so far is written (lines before SIGHUP go to the old file)."""
        if self._thread is not None:
            self._queue.put(_REOPEN)

    def sync(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued, then close."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    # -- writer thread ---------------------------------------------------
    def _run(self) -> None:
        while True:
            batch: list[str] = []
            item = self._queue.get()
            while True:
                if isinstance(item, str):
                    batch.append(item)
                elif callable(item) and not isinstance(item, threading.Event):
                    try:
                        batch.append(item())
                    except Exception:  # a bad record must not kill the writer
                        log.exception("cannot format a line of %s", self.path)
                else:
                    self._flush(batch)
                    batch = []
                    if item is _STOP:
                        self._close_fd()
                        return
                    if item is _REOPEN:
                        self._reopen()
                    elif isinstance(item, threading.Event):
                        item.set()
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush(batch)

    def _flush(self, batch: list[str]) -> None:
        if not batch:
            return
        if self._fd is None:  # a reopen failed: try again, the directory may be back
            self._reopen()
            if self._fd is None:
                return
        data = "".join(batch).encode("utf-8", errors="replace")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._failing = False
        except OSError as exc:
            self._report(exc)

    def _reopen(self) -> None:
        self._close_fd()
        try:
            self._fd = open_append(self.path)
            self._failing = False
        except OSError as exc:
            self._report(exc)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _report(self, exc: OSError) -> None:
        """One error line per failure streak, not one per batch."""
        if not self._failing:
            log.error("cannot write %s: %s", self.path, exc.strerror or exc)
            self._failing = True


class OperationLogs:
    """The deployment log file and the debug file of server.conf `logs`."""

    def __init__(self, logfile: Path | None = None, debugfile: Path | None = None, debug_level: int = 3) -> None:
        self.logfile = AppendFile(logfile) if logfile else None
        self.debugfile = AppendFile(debugfile) if debugfile else None
        self.debug_level = debug_level

    @property
    def files(self) -> list[AppendFile]:
        return [f for f in (self.logfile, self.debugfile) if f is not None]

    def check(self) -> None:
        """Create the files if missing and check they are writable (Kadeploy3 does at config load); OSError if not."""
        for file in self.files:
            os.close(open_append(file.path))

    def open(self) -> None:
        for file in self.files:
            file.open()

    def reopen(self) -> None:
        for file in self.files:
            file.reopen()

    def sync(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        return all(file.sync(timeout) for file in self.files)

    def close(self) -> None:
        for file in self.files:
            file.close()

    def output(self, wid: str, user: str, level: int, text: str) -> None:
        """One client output line of workflow `wid` (debug file)."""
        if self.debugfile is not None and level <= self.debug_level:
            prefix = f"{wid}|{user} -> "
            self.debugfile.write("".join(f"{prefix}{line}\n" for line in text.splitlines() or [""]))

    def records(self, records: Iterable[dict[str, Any]]) -> None:
        """The per-node stats records of an ended operation (deployment log file), in one write.

        Formatted by the writer thread: 4,000 records take tens of milliseconds.
        """
        if self.logfile is not None:
            rows = list(records)
            self.logfile.write(lambda: "".join(format_record(record) + "\n" for record in rows))


def format_record(record: dict[str, Any]) -> str:
    """One line of the deployment log file: Kadeploy3's field order, Ruby's `to_s` of each value."""
    values = []
    for name in LOG_FIELDS:
        value = record.get(name)
        if value is None:
            text = "0" if name in _NUMERIC else ""
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif name in _NUMERIC and isinstance(value, float):
            text = str(int(value))
        else:
            text = str(value)
            if "\n" in text or "\r" in text:  # one line per node, whatever the error text holds
                text = " ".join(text.splitlines())
        values.append(text)
    return ",".join(values)
