"""testbed.fake room: recognising the command lines the server sends to a node.

A fake node runs no shell. It recognises, by pattern, the exact commands of
`kadeploy.steps.commands`, `kadeploy.remote.shell` (the process-group wrapper
and its kill) and `kadeploy.broadcast` (the relay), and turns each into a
`FakeCommand` the node interprets. Anything it does not recognise is refused
(exit 127) rather than faked as a success: if the steps change what they
send, the fake tests fail instead of passing on commands nothing checked.
Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from kadeploy.remote.shell import PGID_MARKER

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_KILL = re.compile(r"^kill -s KILL -- -(\d+)\b")
_TEST_E = re.compile(r"test -e ('(?:[^']|'\"'\"')*'|\S+) \|\| \{ echo ('(?:[^']|'\"'\"')*'|\S+) >&2; exit 1; \}")
_RESOLVED = re.compile(r"(?:^|; )([ki])=('(?:[^']|'\"'\"')*'|[^\s;]+); while")
_DEVICE = re.compile(r"^/dev/\S*?(\d+)$")

#: text only the executor's tree agent source holds (its docstring's first line)
AGENT_MARK = "Tree-mode agent: runs ON A NODE"
DECOMPRESSORS = {"gzip -cd": "gzip", "bzip2 -cd": "bzip2", "xz -cd": "xz", "zstd -cd": "zstd", "cat": "none"}


@dataclass(frozen=True)
class FakeCommand:
    """What a command line asks of a node: `kind` and its arguments."""

    kind: str
    args: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Unwrapped:
    """A command line with the executor's wrapper removed; `pgid_marker` says whether to print it."""

    command: str
    env: dict[str, str]
    pgid_marker: bool


@dataclass(frozen=True)
class Sink:
    """The node-side image pipeline of a broadcast: decompressor then tar into a dir or raw to a device."""

    compression: str
    kind: str            # "tar" or "dd"
    target: str          # extraction dir (tar) or device (dd)


def _unquote(word: str) -> str:
    try:
        parts = shlex.split(word)
    except ValueError:
        return word
    return parts[0] if parts else ""


def unwrap(line: str) -> Unwrapped:
    """Strip `VAR='v' exec setsid -w sh -c '<wrapper>' kadeploy '<command>'` (remote.shell.wrap_command)."""
    marker = "exec setsid -w sh -c "
    position = line.find(marker)
    if position < 0 or PGID_MARKER not in line:
        return Unwrapped(line, {}, False)
    try:
        prefix = shlex.split(line[:position])
        rest = shlex.split(line[position:])
    except ValueError:
        return Unwrapped(line, {}, False)
    if len(rest) != 8 or rest[6] != "kadeploy" or not all(_ASSIGNMENT.match(word) for word in prefix):
        return Unwrapped(line, {}, False)
    env = dict(word.split("=", 1) for word in prefix)
    return Unwrapped(rest[7], env, True)


def parse_sink(text: str) -> Sink | None:
    """`gzip -cd | tar --numeric-owner -C '/mnt/dest' -xf -` or `gzip -cd > '/dev/sda3'`."""
    for prefix, compression in DECOMPRESSORS.items():
        if not text.startswith(prefix + " "):
            continue
        rest = text[len(prefix):].strip()
        if rest.startswith("| tar ") and rest.endswith(" -xf -"):
            try:
                words = shlex.split(rest[2:])
            except ValueError:
                return None
            if "-C" in words and words.index("-C") + 1 < len(words):
                return Sink(compression, "tar", words[words.index("-C") + 1])
            return None
        if rest.startswith("> "):
            return Sink(compression, "dd", _unquote(rest[2:]))
    return None


def partition_number(device: str) -> int | None:
    """`/dev/sda3` -> 3."""
    match = _DEVICE.match(device)
    return int(match.group(1)) if match else None


def _kexec(command: str) -> FakeCommand:
    start = command.find("kexec -l ")
    end = command.find(" && (nohup", start)
    try:
        words = shlex.split(command[start:end if end > 0 else None])
    except ValueError:
        return FakeCommand("unknown")
    kernel = words[2] if len(words) > 2 else ""
    initrd = ""
    params = ""
    for word in words[3:]:
        if word.startswith("--initrd="):
            initrd = word[len("--initrd="):]
        elif word.startswith("--append="):
            params = word[len("--append="):]
    resolved = {name: _unquote(value) for name, value in _RESOLVED.findall(command[:start])}
    if kernel == "$k":
        kernel = resolved.get("k", kernel)
    if initrd == "$i":
        initrd = resolved.get("i", initrd)
    return FakeCommand("kexec", {"kernel": kernel, "initrd": initrd, "params": params})


def is_relay_line(text: str) -> bool:
    """Whether `text` starts the broadcast's relay (`exec python3 -c <its source>`, its config may follow)."""
    return text.startswith("exec python3 -c ") and "Broadcast relay" in text


def relay_command(config_text: str) -> FakeCommand:
    """The relay started with the JSON configuration `config_text`."""
    try:
        return FakeCommand("relay", {"config": json.loads(config_text)})
    except ValueError:
        return FakeCommand("unknown")


def _last_word(text: str) -> str:
    """The last shell word of `text` (a relay's quoted JSON config, after its ~50 KB quoted source).

    Tokenizing the whole line cost the fake worker 24 ms per relay; the config's quoted word starts
    at the last " '{" unless that is inside the source, in which case the tail is more than one word
    and the whole line is split after all."""
    start = text.rfind(" '{")
    if start >= 0:
        tail = shlex.split(text[start + 1:])
        if len(tail) == 1:
            return tail[0]
    return shlex.split(text)[-1]


def is_agent_command(text: str) -> bool:
    return text.startswith("exec ") and " -c " in text and AGENT_MARK in text


def agent_source_of(text: str) -> str | None:
    """The source in `exec python3 -c '<source>'`, None when the line is not that."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if len(words) != 4 or words[0] != "exec" or words[2] != "-c":
        return None
    return words[3]


def classify(command: str) -> FakeCommand:
    """What `command` (already unwrapped) asks of the node."""
    text = command.strip()
    if is_relay_line(text):
        try:
            return relay_command(_last_word(text))
        except (ValueError, IndexError):
            return FakeCommand("unknown")
    if is_agent_command(text):
        source = agent_source_of(text)
        return FakeCommand("agent", {"source": source}) if source is not None else FakeCommand("unknown")
    if match := _KILL.match(text):
        return FakeCommand("kill", {"pgid": int(match.group(1))})
    if text.startswith("tmp=$(mktemp) && chmod 755 \"$tmp\" && cat - > \"$tmp\" && "):
        return FakeCommand("script")
    if "cat - >> " in text and text.rstrip("'").endswith("/authorized_keys"):
        return FakeCommand("keys", {"path": _unquote(text.rsplit("cat - >> ", 1)[1])})
    if "kexec -l " in text:
        return _kexec(text)
    if "/sbin/reboot -f" in text or text in ("reboot", "/sbin/reboot"):
        return FakeCommand("reboot")
    if " mkfs -t " in f" {text}" or text.startswith("mkswap "):
        device = _unquote(text.split()[-1])
        return FakeCommand("format", {"device": device})
    if "mountpoint -q " in text and " mount " in text:
        words = shlex.split(text.rsplit("mount ", 1)[1].rstrip(")"))
        return FakeCommand("mount", {"device": words[0], "dir": words[1] if len(words) > 1 else ""})
    if text.startswith("mount ") and "|" not in text:
        words = shlex.split(text)
        return FakeCommand("mount", {"device": words[1] if len(words) > 1 else "",
                                     "dir": words[2] if len(words) > 2 else ""})
    if text.startswith("sync; umount -l "):
        return FakeCommand("umount", {"device": _unquote(text.split()[3])})
    if text in ("sync", "true"):
        return FakeCommand("noop")
    if text == "false":
        return FakeCommand("exit", {"status": 1})
    if text == "mount | grep ' / ' | cut -f1 -d' '":
        return FakeCommand("rootdev")
    if (match := re.fullmatch(r"exit (\d+)", text)) is not None:
        return FakeCommand("exit", {"status": int(match.group(1))})
    if text.startswith("echo ") and not any(c in text for c in "|;&><$`"):
        return FakeCommand("echo", {"text": " ".join(shlex.split(text)[1:])})
    if text.startswith("test -e "):
        checks = [(_unquote(path), _unquote(message)) for path, message in _TEST_E.findall(text)]
        if checks:
            return FakeCommand("test", {"checks": checks})
    if re.fullmatch(r"mkdir -p \S+", text):
        return FakeCommand("noop")
    if (match := re.fullmatch(r"(?:mkdir -p \S+ && )?cat (?:- )?> (\S+)(?: && chmod [0-7]+ \S+)?", text)) is not None:
        return FakeCommand("put", {"path": _unquote(match.group(1))})
    if text.startswith("mkdir -p ") and " | tar -C " in text and text.endswith(" -xf -"):
        return FakeCommand("unpack")
    if text.startswith("cd ") and " && " in text:
        return FakeCommand("archive-script")
    return FakeCommand("unknown")
