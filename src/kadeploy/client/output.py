"""Text the workflow tools print: log merging, result blocks, live status, -o/-n and --json files.

Client room. Wording follows Kadeploy3's `client.rb` (reference 1.5, 2.3) so
that scripts grepping `The deployment is successful on nodes` keep working.
Pure functions returning lines, plus a thread-safe `Printer` that adds the
`[site] ` prefix of the multi-server mode.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kadeploy.client.errors import ClientError
from kadeploy.nodeset import sort_key


class Printer:
    """Writes whole lines, prefixed `[name] ` (padded to 10 columns, as Kadeploy3) when named."""

    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None = None, name: str | None = None,
                 sink: Callable[[str], None] | None = None) -> None:
        self.stream = stream
        self.name = name
        self.sink = sink
        self.silenced = False

    def silence(self) -> None:
        """Print nothing more: Kadeploy3 kills a server's thread when another server's error ends the run."""
        with self._lock:
            self.silenced = True

    def prefixed(self, text: str) -> str:
        if not self.name:
            return text
        head = f"[{self.name}] "
        return "\n".join(f"{head:<10}{line}" for line in text.split("\n"))

    def line(self, text: str = "") -> None:
        out = self.prefixed(text)
        with self._lock:
            if self.silenced:
                return
            if self.sink is not None:
                self.sink(out)
                return
            stream = self.stream or sys.stdout
            stream.write(out + "\n")
            stream.flush()

    def lines(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.line(text)


def split_log_line(line: str) -> tuple[float, str]:
    """`"<epoch>|<text>"` → (epoch, text); a line without a timestamp sorts first."""
    stamp, sep, text = line.partition("|")
    if not sep:
        return 0.0, line
    try:
        return float(stamp), text
    except ValueError:
        return 0.0, line


def merge_log_lines(chunks: Iterable[str], debug_chunks: Iterable[str] = ()) -> list[str]:
    """Merge log (and `[dbg] `-tagged debug) texts by timestamp; stable for equal stamps."""
    entries: list[tuple[float, str]] = []
    for chunk in chunks:
        entries += [split_log_line(line) for line in chunk.split("\n") if line != ""]
    for chunk in debug_chunks:
        for line in chunk.split("\n"):
            if line.strip():
                stamp, text = split_log_line(line)
                entries.append((stamp, f"[dbg] {text}"))
    entries.sort(key=lambda entry: entry[0])
    return [text for _, text in entries]


def sorted_nodes(nodes: Iterable[str]) -> list[str]:
    return sorted(nodes, key=sort_key)


def result_lines(operation: str, info: Mapping[str, Any], states: Mapping[str, Any]) -> list[str]:
    """The final block: successful nodes, then failed nodes with their error."""
    nodes = info.get("nodes") or {}
    if not isinstance(nodes, Mapping):
        return []
    word = operation.lower()
    lines: list[str] = []
    ok = list(nodes.get("ok") or [])
    ko = list(nodes.get("ko") or [])
    if ok:
        lines.append(f"The {word} is successful on nodes")
        lines += ok
    if ko:
        lines.append(f"The {word} failed on nodes")
        for node in ko:
            state = states.get(node) or {}
            lines.append(f"{node} ({state.get('error') or ''})")
    return lines


def create_node_file(path: str | Path) -> None:
    """-o/-n are emptied (created) before anything runs: client.rb `load_outputfile`, `File.open(file,'w'){}`."""
    try:
        Path(path).write_text("")
    except OSError:
        raise ClientError(f"Cannot create the file '{path}'") from None


def append_node_file(path: str | Path, nodes: Iterable[str]) -> None:
    """A server's ok or ko nodes, one per line, appended when it finishes (client.rb `result`: 'a+', only
    when the list is not empty), so with -M the file follows the order in which the servers finished."""
    names = list(nodes)
    if not names:
        return
    try:
        with Path(path).open("a") as file:
            file.write("".join(f"{name}\n" for name in names))
    except OSError as exc:
        raise ClientError(f"Cannot write the file '{path}': {exc.strerror or exc}") from None


def status_lines(operation: str, status: Mapping[str, Any] | None, elapsed: int) -> list[str]:
    """What ENTER prints while waiting (Kadeploy3's `display_status`)."""
    lines = ["---"]
    if not status:
        lines.append(f"{operation} did not start at the moment")
    else:
        lines.append(f"{operation} status ({elapsed}s):")
        if len(status) == 1:
            lines += _cluster_status(next(iter(status.values())), "")
        else:
            for cluster, cluster_status in status.items():
                lines.append(f"  [{cluster}]")
                lines += _cluster_status(cluster_status, "  ")
    lines.append("---")
    return lines


def _cluster_status(stat: Any, prefix: str) -> list[str]:
    lines: list[str] = []
    if not isinstance(stat, Mapping):
        return lines
    for macro, micros in stat.items():
        if isinstance(micros, Mapping):
            for micro, status in micros.items():
                if isinstance(status, Mapping):
                    for state, nodes in (status.get("nodes") or {}).items():
                        if nodes:
                            lines.append(f"{prefix}  [{macro}-{micro}] ~{status.get('time')}s ({state})")
                            lines += [f"{prefix}     {node}" for node in nodes]
                elif isinstance(status, list):
                    lines.append(f"{prefix}  [{macro}-{micro}]")
                    lines += [f"{prefix}    {node}" for node in status]
        elif isinstance(micros, list):
            lines.append(f"{prefix}  [{macro}]")
            lines += [f"{prefix}    {node}" for node in micros]
    return lines


@dataclass
class MacroProgress:
    """Node counts of one macro-step for the live display."""

    ok: int = 0
    ko: int = 0
    running: int = 0
    time: float = 0.0


def macro_progress(status: Mapping[str, Any] | None) -> dict[str, MacroProgress]:
    """Aggregate a /status snapshot into per-macro-step counts (all clusters summed)."""
    progress: dict[str, MacroProgress] = {}
    if not isinstance(status, Mapping):
        return progress
    for cluster_status in status.values():
        if not isinstance(cluster_status, Mapping):
            continue
        for macro, micros in cluster_status.items():
            entry = progress.setdefault(str(macro), MacroProgress())
            if isinstance(micros, list):
                entry.running += len(micros)
                continue
            if not isinstance(micros, Mapping):
                continue
            for status_entry in micros.values():
                if isinstance(status_entry, list):
                    entry.running += len(status_entry)
                    continue
                if not isinstance(status_entry, Mapping):
                    continue
                nodes = status_entry.get("nodes") or {}
                entry.ok += len(nodes.get("OK") or [])
                entry.ko += len(nodes.get("KO") or [])
                entry.running += len(nodes.get("**") or [])
                try:
                    entry.time = max(entry.time, float(status_entry.get("time") or 0))
                except (TypeError, ValueError):
                    pass
    return progress


@dataclass
class NodeResult:
    """Per-node line of the --json result."""

    state: str
    macro: str | None = None
    micro: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def json_result(
    operation: str,
    wid: str | None,
    server: str | None,
    info: Mapping[str, Any],
    states: Mapping[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """Machine-readable result: ok/ko lists and each node's state, step reached and error."""
    nodes_info = info.get("nodes") if isinstance(info.get("nodes"), Mapping) else {}
    ok = list(nodes_info.get("ok") or [])
    ko = list(nodes_info.get("ko") or [])
    per_node: dict[str, Any] = {}
    for node in sorted_nodes(set(ok) | set(ko) | set(states)):
        state = dict(states.get(node) or {})
        verdict = "ok" if node in ok else "ko" if node in ko else state.get("state", "unknown")
        entry: dict[str, Any] = {
            "state": verdict,
            "detail": state.pop("state", None),
            "macro": state.pop("macro", None),
            "micro": state.pop("micro", None),
            "error": state.pop("error", None),
        }
        entry.update(state)  # durations, out, ... whatever the server adds
        per_node[node] = entry
    return {
        "operation": operation.lower(),
        "wid": wid,
        "server": server,
        "error": bool(info.get("error")),
        "time": round(elapsed, 3),
        "ok": ok,
        "ko": ko,
        "nodes": per_node,
    }


def write_json(path: str | Path, document: Any) -> None:
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).write_text(text)
