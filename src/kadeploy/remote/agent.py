"""Tree-mode agent: runs ON A NODE, runs the command there and relays to more nodes.

This file is sent over the SSH channel and started with `python3 -c <source>`
(auto-propagation, as the broadcast relay): it must stay ONE stdlib-only file,
compatible with python3 >= 3.9, importing nothing from kadeploy. Its first
stdin line is its configuration (JSON, below); it then speaks JSON lines:
commands on stdin, events on stdout, one object per line.

What an agent does (the server's `remote.tree` is the only scheduler; agents
never decide which node runs where, so that no node can run twice):

* runs the command on its own node once, in its own process group, after
  taking a per-run lock on the node (O_EXCL file: a second agent started on
  the same node for the same run refuses, which is what makes taking back a
  lost relay's nodes safe) and after reporting `started`;
* asks for work (`want`, its free child slots: at most `arity` children) and
  starts each granted node as a child: `ssh <node> exec python3 -c <source>`
  with this same source (the lower hops authenticate with the server's SSH
  agent, forwarded hop by hop with `ssh -A`: no private key on any node);
* forwards its children's events up, and the server's commands down (`to`);
* watches its children: a child silent for `stall` seconds (heartbeats every
  `heartbeat`) is cut off and reported `lost`; a child whose ssh ended before
  it said `hello` is reported `failed` with ssh's reason.

Orphans and adoption (why a relay's death costs one node, not its subtree):
an agent whose parent link ends without `quit` or `kill` (its relay died, or
was taken as stalled and cut off) keeps its command and its children running
for `orphan` seconds, keeping what it would have sent up, and listens on a
Unix socket named by its run and node (Linux's abstract namespace: nothing
left on disk, gone with the process; only a peer of its own uid is accepted,
SO_PEERCRED). The server then
grants the node again to the lost relay's parent; the agent that ssh starts
there finds the socket and becomes a mere proxy between its ssh and the
orphan (`proxy`), which is thereby adopted: it says `hello` again (with
`adopted` and the hosts of its subtree, so that every relay above routes to
them), replays its journal (the `started`, `result`, `exit`, `failed`,
`lost` and `gone` events of its subtree: the last ones sent may have died
with the old link), sends what it held, then `synced` with its children (the
server re-grants a node it had granted that is not among them), and has its
subtree do the same (`sync`: a grant or a want lost deeper is found too). An agent
that finds the run's lock taken and nobody on the socket says `gone` (the
agent that ran there died: whatever it started is lost, never rerun) and
exits. An orphan nobody adopts in time kills its command and its subtree.

Its command dies with it: a watchdog in the command's process group kills the
group when the agent's end of a pipe closes without the release line (the
agent was killed), and the agent kills the group on timeout, `kill`, and at
the end of an orphan's wait. Its ssh children get SIGTERM when it dies
(PR_SET_PDEATHSIG), so a killed relay's children become orphans.

A stream run ("stream": true; the broadcast's long-lived relays) differs in
the command only: it gets a stdin pipe fed by the server (`in`, `eof`), its
stdout and stderr go up as they come (`out`, base64 chunks of at most
READ_SIZE bytes), `exit` replaces `result`, and `kill` addressed to the node
kills that node's command only (its agent keeps relaying for its subtree).
The node's own argument (`arg`, e.g. a relay's JSON config) is appended
shell-quoted to the shared `line`: it travels in the grant, so that a large
shared line (the relay's source) is in the run's configuration once.

Configuration (first stdin line): {"host", "run", "line" (the shell line to
run), "timeout" (s or null), "input" (base64 or null), "arity", "outputs_size",
"heartbeat", "stall", "orphan" (how long an orphan waits to be adopted),
"connect_timeout", "lock_dir", "ssh" (argv prefix for a
child, the address follows), "prefer" (ssh algorithms to put first),
"python", "source" (this file, to propagate), "stream" (bool), "arg" (this
node's argument or null)}.
Commands (stdin): {"op": "grant", "to": host, "nodes": [[host, address(, arg)], ...]},
                  {"op": "quit"} (forwarded to every child), {"op": "kill"},
                  {"op": "sync"} (answered with `synced`, forwarded to every child);
                  EOF = orphan (kill once quitting);
                  stream runs: {"op": "in", "to", "data"}, {"op": "eof", "to"},
                  {"op": "kill", "to"} (that node's command only).
Events (stdout):  hello {protocol, pid(, adopted, subtree)}, beat, want {n}, started,
                  result {status, signal, stdout, stderr, error}, failed {error, by}
                  (a child that never started), lost {by(, error)} (a child that went away,
                  or that was cut off for its silence before its hello),
                  gone {error} (instead of hello: this node's agent of the run died),
                  synced {children} (an adopted agent's replay is over),
                  kept {by} (a node granted again to the relay that still holds it);
                  stream runs: out {fd, data}, exit {status, signal, error};
                  every event names its `host`.
"""

import base64
import errno
import hashlib
import json
import os
import select
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

PROTOCOL = 1

#: the command's wrapper: a watchdog in the command's process group kills the group when fd 3
#: (a pipe from the agent) ends without a line, i.e. when the agent died before releasing it
WATCHDOG = '( read x <&3 || kill -s KILL 0 ) >/dev/null 2>&1 </dev/null & exec 3<&-; eval "$1"'

#: ssh's own reasons mapped to the texts the flat executor gives (`connections.describe_connect_error`)
SSH_REASONS = (
    ("Connection refused", "Connection refused"),
    ("Connection timed out", "Connection timeout"),
    ("Operation timed out", "Connection timeout"),
    ("Permission denied", "Authentication failed (permission denied)"),
    ("No route to host", "No route to host"),
    ("Network is unreachable", "No route to host"),
    ("Could not resolve hostname", "Unknown host"),
)

READ_SIZE = 65536

#: events that decide or describe a node's state: every agent keeps the last of each kind per node of
#: its subtree (its journal) and replays them when it is adopted (the old link may have lost them)
DECISIVE = ("started", "result", "exit", "failed", "lost", "gone")
#: the most bytes of other events (a stream's output, descendants' wants) an orphan holds for its
#: next parent; beyond it, the orphan gives up waiting (its command and subtree end)
HELD_LIMIT = 16 * 1024 * 1024
#: the text of a node whose run lock is taken and whose agent is gone
GONE_ERROR = "Already started by another relay for this run (that relay was lost: the result is unknown)"


def event_line(event, **fields):
    """One protocol line (bytes, newline-terminated)."""
    fields["ev"] = event
    return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


def describe_ssh_failure(stderr, status):
    """The per-node error for a child whose ssh ended before its agent said hello."""
    text = stderr.decode("utf-8", "replace")
    for needle, reason in SSH_REASONS:
        if needle in text:
            return reason
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        return "Agent did not start: " + lines[-1][:300]
    return "Agent did not start: ssh exited with status %s" % status


def preferred_first(preferred, defaults):
    """`defaults` with the `preferred` ones it holds first (nothing added, nothing removed)."""
    first = [name for name in preferred if name in defaults]
    return first + [name for name in defaults if name not in first]


def ssh_preferences(ssh, prefer):
    """-o options putting `prefer` ({"kexalgorithms": [...], "ciphers": [...]}) first in this ssh's defaults.

    The defaults are read from `ssh -G` (OpenSSH >= 6.8: the effective
    configuration, system files included), so that nothing is removed from what
    the node's ssh offers: the same policy as the server's asyncssh
    (`remote/tuning.py`). With OpenSSH 9.2's own order (the hybrid sntrup761
    key exchange, chacha20) a connection cost 82 ms of client CPU on the sshd
    lab, 15 ms with curve25519 and AES-GCM first (0.23 -> 0.16 s per hop).
    Any failure: no option (ssh's own order).
    """
    if not prefer:
        return []
    try:
        probe = subprocess.run([ssh[0], "-G", "kadeploy-probe"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    options = []
    for line in probe.stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key in prefer and value:
            ordered = preferred_first(prefer[key], value.split(","))
            if ordered != value.split(","):
                options += ["-o", "%s=%s" % (key, ",".join(ordered))]
    return options


def lock_path(run, host, directory="/tmp"):
    """The per-run lock of one node (the host name is hashed: it may hold any character)."""
    digest = hashlib.sha256(("%s\0%s" % (run, host)).encode()).hexdigest()[:32]
    return os.path.join(directory, "kadeploy-agent-%s.lock" % digest)


def socket_address(run, host, directory="/tmp"):
    """Where a node's agent of a run listens for its adopter: an abstract Unix socket (Linux), so that
    a dead agent leaves nothing that answers, and no path length limit applies."""
    digest = hashlib.sha256(("%s\0%s\0%s" % (run, host, directory)).encode()).hexdigest()[:32]
    return "\0kadeploy-agent-%s" % digest


def peer_uid(connection):
    """The uid of the process at the other end of a Unix socket (None when it cannot be told)."""
    try:
        import struct
        data = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", data)[1]
    except (OSError, AttributeError):
        return None


def take_lock(path):
    """True when this agent is the first of its run on this node."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    os.close(fd)
    return True


class Capture(object):
    """The first `limit` bytes of a stream, the rest counted (the flat executor's `_Capture`)."""

    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.kept = 0
        self.dropped = 0

    def feed(self, chunk):
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(chunk[:room])
            self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self):
        data = b"".join(self.parts).decode("utf-8", "replace")
        if self.dropped:
            data += "\n[... %d bytes truncated]" % self.dropped
        return data


class LineBuffer(object):
    """Split a byte stream into lines; a line longer than `limit` is a protocol error."""

    def __init__(self, limit=64 * 1024 * 1024):
        self.data = b""
        self.limit = limit

    def feed(self, chunk):
        self.data += chunk
        lines = []
        while True:
            cut = self.data.find(b"\n")
            if cut < 0:
                break
            lines.append(self.data[:cut])
            self.data = self.data[cut + 1:]
        if len(self.data) > self.limit:
            raise ValueError("protocol line longer than %d bytes" % self.limit)
        return lines


def write_all(fd, data):
    """Blocking write of everything; False when the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            done = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return False
        view = view[done:]
    return True


def _die_with_parent():
    """preexec of an ssh child: SIGTERM when this agent dies (Linux), its own process group."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ChildState(object):
    """What the logic knows of one child it started: heard from when, said hello, ended."""

    def __init__(self, host, now):
        self.host = host
        self.last_seen = now
        self.hello = False
        self.ended = False


class Logic(object):
    """An agent's decisions, without I/O: what to say up, whom to start, when to kill, when to stop.

    Why apart from the I/O: the same decisions run on a real node (`Agent`
    below: a process, `sh` for the command, `ssh` for the children, selectors)
    and in any host that provides the `io` methods, e.g. a fake testbed's node
    serving thousands of nodes in one process; there is one implementation of
    the protocol, not one per host. The host calls the `on_*` methods when
    something happens, `beat` and `tick` regularly (at least every
    `heartbeat`), and stops when `tick` answers True, then calls `close`. When
    another parent connects to this agent (its adopter), the host makes
    `send_up` write there and calls `on_adopted`.

    `io` provides: send_up(data) -> bool (False: the parent is gone), pid(),
    take_lock() -> bool (may raise OSError),
    start_command(line, input_base64, timeout) -> None or an error text,
    start_stream(line) -> None or an error text (a stream run's command: its
    output goes to `on_command_output`), command_input(data), command_eof(),
    kill_command(), spawn(host, address, config_line) -> None or an error text,
    send_down(host, data) -> bool, close_child(host, kill) -> (status, stderr bytes)
    (after it, nothing more comes from that child).
    """

    def __init__(self, config, io):
        self.config = config
        self.host = config["host"]
        self.io = io
        self.children = {}
        self.routes = {}
        self.reported = False
        self.command_running = False
        self.command_killed = False
        self.timed_out = False
        self.deadline = None
        self.want_pending = False
        self.quitting = False
        self.parent_alive = True
        self.next_beat = None
        self.stop_deadline = None
        self.stream = bool(config.get("stream"))
        #: True when this node's run lock was taken by an agent that is gone: nothing to do but say so
        self.gone = False
        #: (host, kind) -> the last DECISIVE event of that kind for that node of the subtree, in order
        self.journal = {}
        #: other events kept while orphaned, for the next parent
        self.held = []
        self.held_size = 0
        #: when an orphan stops waiting for an adopter (None: not an orphan)
        self.orphan_deadline = None

    # -- events up ---------------------------------------------------------------------------

    def up(self, data, kind, host):
        """One event line towards the server: journaled when decisive, held while orphaned."""
        if kind in DECISIVE:
            key = (host, kind)
            self.journal.pop(key, None)
            self.journal[key] = data
        elif kind == "hello" and host != self.host:
            for stale in ("lost", "failed", "gone"):  # it is back: what was said of its end is over
                self.journal.pop((host, stale), None)
        if self.parent_alive:
            if self.io.send_up(data):
                return
            self.parent_alive = False  # an orphan from now on (`tick` starts its clock)
        if kind not in DECISIVE and kind != "beat" and not (host == self.host and kind in ("want", "hello", "synced")):
            self.held.append(data)
            self.held_size += len(data)

    def emit(self, event, **fields):
        fields.setdefault("host", self.host)
        self.up(event_line(event, **fields), event, fields["host"])

    def begin(self, now):
        """Take the run lock, say hello, start the own command, ask for work."""
        try:
            first = self.io.take_lock()
        except OSError as exc:
            self.emit("hello", protocol=PROTOCOL, pid=self.io.pid())
            self.finish_command(None, None, error="Cannot take the run lock on the node: %s" % exc)
            first = None
        if first is False:
            # the node's agent of this run is gone (nobody answered on its socket): what it
            # started is lost, and nothing is run twice
            self.gone = True
            self.emit("gone", error=GONE_ERROR)
            return
        if first:
            self.emit("hello", protocol=PROTOCOL, pid=self.io.pid())
            self.start_command(now)
        self.maybe_want()
        self.next_beat = now + self.config["heartbeat"]

    def beat(self, now):
        if self.parent_alive and (self.next_beat is None or now >= self.next_beat):
            self.emit("beat")
            self.next_beat = now + self.config["heartbeat"]

    def on_adopted(self, now):
        """A new parent took this agent over (the host's `send_up` now writes to it): say who we are
        and which nodes are behind us, replay the journal and what was held, then `synced`."""
        self.parent_alive = True
        self.orphan_deadline = None
        self.want_pending = False
        self.emit("hello", protocol=PROTOCOL, pid=self.io.pid(), adopted=True,
                  subtree=sorted(set(self.routes) | {self.host}))
        held, self.held, self.held_size = self.held, [], 0
        journal = list(self.journal.values())
        for index, data in enumerate(journal + held):
            if not self.parent_alive or not self.io.send_up(data):
                # that parent is gone too: keep what it did not get for the next one
                self.parent_alive = False
                self.held = held[max(0, index - len(journal)):]
                self.held_size = sum(len(line) for line in self.held)
                return
        self.sync()
        self.next_beat = now + self.config["heartbeat"]

    def sync(self):
        """Say which children we hold and ask our subtree to do the same: grants and wants that died
        with a lost link anywhere above us are thereby found (the server grants a missing child
        again; a relay whose want was lost asks again)."""
        self.want_pending = False
        self.emit("synced", children=sorted(self.children))
        for child in list(self.children.values()):
            self.send_down(child, b'{"op":"sync"}\n')

    # -- the own command ---------------------------------------------------------------------

    def start_command(self, now):
        self.emit("started")
        timeout = self.config.get("timeout")
        if self.stream:
            line = self.config["line"]
            if self.config.get("arg") is not None:
                line += " " + shlex.quote(self.config["arg"])
            error = self.io.start_stream(line)
            timeout = None
        else:
            error = self.io.start_command(self.config["line"], self.config.get("input"), timeout)
        if error is not None:
            self.finish_command(None, None, error="Cannot start the command: %s" % error)
            return
        self.command_running = True
        self.deadline = now + timeout if timeout else None

    def on_command_output(self, fd, chunk):
        """A stream run's command wrote `chunk` on `fd` (1 or 2): up it goes, as it comes."""
        if not self.reported:
            self.emit("out", fd=fd, data=base64.b64encode(chunk).decode("ascii"))

    def on_command_end(self, status, stdout, stderr):
        """The command ended (`status`: its exit status, minus the signal number if killed)."""
        self.command_running = False
        if self.reported:
            return
        error = None
        sig = None
        if self.timed_out:
            error = "Command timeout after %gs" % self.config["timeout"]
            status = None
        elif status < 0:
            try:
                sig = signal.Signals(-status).name[3:]
            except ValueError:
                sig = str(-status)
            error = "Killed by signal %s" % sig
            status = None
        self.finish_command(status, sig, error=error, stdout=stdout, stderr=stderr)

    def kill_command(self):
        if self.command_running and not self.command_killed:
            self.command_killed = True
            self.io.kill_command()

    def finish_command(self, status, sig, error=None, stdout="", stderr=""):
        self.reported = True
        if self.stream:
            self.emit("exit", status=status, signal=sig, error=error)
        else:
            self.emit("result", status=status, signal=sig, stdout=stdout, stderr=stderr, error=error)

    # -- children ------------------------------------------------------------------------------

    def child_config(self, host, arg=None):
        config = dict(self.config)
        config["host"] = host
        config["arg"] = arg
        return (json.dumps(config, separators=(",", ":")) + "\n").encode()

    def spawn(self, host, address, now, arg=None):
        if host in self.children:
            self.emit("kept", host=host, by=self.host)  # granted again while we still hold it
            return
        error = self.io.spawn(host, address, self.child_config(host, arg))
        if error is not None:
            self.emit("failed", host=host, by=self.host,
                      error="Cannot run ssh on the relay %s: %s" % (self.host, error))
            return
        child = ChildState(host, now)
        self.children[host] = child
        self.routes[host] = child

    def on_child_seen(self, host, now):
        child = self.children.get(host)
        if child is not None:
            child.last_seen = now

    def on_child_line(self, host, line):
        child = self.children.get(host)
        if child is None or child.ended:
            return
        try:
            event = json.loads(line)
            kind = event["ev"]
            source = event["host"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "beat":
            return
        if kind == "hello":
            if source == child.host:
                child.hello = True
            self.routes[source] = child
            for name in event.get("subtree") or ():  # an adopted agent brings its subtree along
                if isinstance(name, str):
                    self.routes[name] = child
        self.up(line + b"\n", kind, source)

    def end_child(self, host, killed):
        """The child's streams ended (`killed` False), or it must go (True: stalled, broken)."""
        child = self.children.get(host)
        if child is None or child.ended:
            return
        child.ended = True
        status, stderr = self.io.close_child(host, killed)
        del self.children[host]
        for name in [name for name, route in self.routes.items() if route is child]:
            del self.routes[name]
        if self.quitting:
            return
        if not child.hello and killed:
            # silent, not refused: its agent may be alive and slow, so it is granted again (lost)
            self.emit("lost", host=host, by=self.host, error="Agent silent for %gs after its ssh started: "
                      "taken as lost" % (self.config["stall"] + self.config["connect_timeout"]))
        elif not child.hello:
            self.emit("failed", host=host, by=self.host, error=describe_ssh_failure(stderr, status))
        else:
            self.emit("lost", host=host, by=self.host)

    def check_children(self, now):
        stall = self.config["stall"]
        for child in list(self.children.values()):
            if child.ended:
                continue
            if now - child.last_seen > (stall if child.hello else stall + self.config["connect_timeout"]):
                self.end_child(child.host, killed=True)

    def send_down(self, child, data):
        if not child.ended and not self.io.send_down(child.host, data):
            self.end_child(child.host, killed=True)

    def maybe_want(self):
        free = self.config["arity"] - len(self.children)
        if free > 0 and not self.want_pending and not self.quitting and self.parent_alive and not self.gone:
            self.want_pending = True
            self.emit("want", n=free)

    # -- commands from the parent -----------------------------------------------------------------

    def on_parent_line(self, line, now):
        try:
            message = json.loads(line)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            return
        target = message.get("to")
        if target is not None and target != self.host:
            child = self.routes.get(target)
            if child is not None:
                self.send_down(child, line + b"\n")
            return
        if op == "grant":
            self.want_pending = False
            for node in message.get("nodes", []):
                self.spawn(node[0], node[1], now, node[2] if len(node) > 2 else None)
        elif op == "in" and self.stream:
            if self.command_running and not self.command_killed:
                self.io.command_input(base64.b64decode(message.get("data") or ""))
        elif op == "eof" and self.stream:
            if self.command_running:
                self.io.command_eof()
        elif op == "kill" and target is not None and self.stream:
            self.kill_command()  # this node's command only: its subtree's streams go on
        elif op == "sync":
            self.sync()
        elif op == "quit":
            self.quitting = True
            for child in list(self.children.values()):
                self.send_down(child, line + b"\n")
        elif op == "kill":
            self.shutdown(kill=True)

    def on_parent_eof(self):
        """The parent link ended: without `quit` or `kill` first, this agent is an orphan (see the
        module's docstring); otherwise the end it was told."""
        self.parent_alive = False
        if self.quitting:
            self.shutdown(kill=True)

    def shutdown(self, kill):
        self.quitting = True
        if kill:
            self.kill_command()
            for child in list(self.children.values()):
                self.send_down(child, b'{"op":"kill"}\n')

    # -- the clock ------------------------------------------------------------------------------

    def tick(self, now):
        """Timeouts, stalled children, asking for work, an orphan's wait; True when the agent is done."""
        if self.gone:
            return True
        if self.command_running and self.deadline is not None and now >= self.deadline:
            self.timed_out = True
            self.kill_command()
        self.check_children(now)
        if not self.parent_alive and not self.quitting:
            if self.orphan_deadline is None:
                self.orphan_deadline = now + self.config.get("orphan", 0)
            if now >= self.orphan_deadline or self.held_size > HELD_LIMIT:
                self.shutdown(kill=True)  # nobody adopted it: its command and its subtree end
                return True
            return False
        if not self.quitting:
            self.maybe_want()
            return False
        if self.stop_deadline is None:
            self.stop_deadline = now + self.config["stall"]
        command_done = not self.command_running or self.reported or self.command_killed
        return (not self.children and command_done) or now >= self.stop_deadline or not self.parent_alive

    def close(self):
        """The end: kill what is left of the command and of the children."""
        self.kill_command()
        for child in list(self.children.values()):
            self.end_child(child.host, killed=True)


class Child(object):
    """One node this agent started: the ssh process running its agent."""

    def __init__(self, host, process):
        self.host = host
        self.process = process
        self.lines = LineBuffer()
        self.stderr = b""
        self.open_streams = 2


class Command(object):
    """This node's own command: process, captures, watchdog release pipe."""

    def __init__(self, process, release, limit):
        self.process = process
        self.release = release
        self.stdout = Capture(limit)
        self.stderr = Capture(limit)
        self.open_streams = 2
        self.status = None
        self.killed = False
        self.done = False
        self.stream = False        # a stream run: output goes up as it comes, not into the captures
        self.stdin_closed = False
        self.pending_input = b""   # a stream command's stdin not written yet (it was not reading)
        self.input_registered = False
        self.eof_wanted = False


class Agent(object):
    """A node's agent as a process: `Logic` over pipes, `sh` and `ssh` (selectors, no threads but the stdin feeder)."""

    def __init__(self, config, out_fd=1, in_fd=0):
        self.config = config
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.selector = selectors.DefaultSelector()
        self.children = {}
        self.command = None
        self.in_lines = LineBuffer()
        self.lock = None
        self.listener = None
        self.parent = None            # the adopter's connection (None: the stdin/stdout we were started with)
        self.parent_reading = False   # the parent link is open for reading
        self.up_pending = bytearray() # events the parent has not read yet
        self.watched = {}             # fd -> selector events, for the parent's fds
        self.ssh_options = None  # the algorithm preferences, read from ssh once, at the first child
        self.logic = Logic(config, self)

    # -- the io the logic uses ----------------------------------------------------------------

    def send_up(self, data):
        """Queue `data` for the parent, written as it reads: a parent that stops reading (stalled,
        stopped) must not freeze this agent, or its heartbeats, its command's output and its
        children's events would stop with it and its whole subtree would be taken as lost. False
        once the parent is gone, or has left more than HELD_LIMIT bytes unread."""
        if self.up_pending:
            if len(self.up_pending) > HELD_LIMIT:
                return False
            self.up_pending += data
            return True
        try:
            done = os.write(self.out_fd, data)
        except (BlockingIOError, InterruptedError):
            done = 0
        except OSError:
            return False
        if done < len(data):
            self.up_pending += data[done:]
            self.watch_parent()
        return True

    def flush_up(self):
        while self.up_pending:
            try:
                done = os.write(self.out_fd, self.up_pending[:READ_SIZE])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the parent is gone: what it did not read is lost (the journal is not)
                self.up_pending = bytearray()
                self.parent_reading = False
                self.logic.on_parent_eof()
                break
            del self.up_pending[:done]
        self.watch_parent()

    def drain_up(self, timeout):
        """At the end: what is still queued for the parent, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.up_pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], [self.out_fd], [], max(0.0, deadline - time.monotonic()))
            if writable:
                self.flush_up()

    def watch_parent(self):
        """The selector's interest in the parent's fds: reading while its link is open, writing while
        output waits (one registration when both are the adopter's socket)."""
        wanted = {}
        if self.parent_reading:
            wanted[self.in_fd] = selectors.EVENT_READ
        if self.up_pending:
            wanted[self.out_fd] = wanted.get(self.out_fd, 0) | selectors.EVENT_WRITE
        for fd in set(self.watched) | set(wanted):
            events, old = wanted.get(fd, 0), self.watched.get(fd, 0)
            if events == old:
                continue
            if not old:
                self.selector.register(fd, events, ("parent", None))
            elif not events:
                self.selector.unregister(fd)
            else:
                self.selector.modify(fd, events, ("parent", None))
        self.watched = wanted

    def pid(self):
        return os.getpid()

    def take_lock(self):
        path = lock_path(self.config["run"], self.config["host"], self.config.get("lock_dir", "/tmp"))
        if not take_lock(path):
            return False
        self.lock = path
        return True

    def listen(self):
        """Listen for an adopter on the run's socket (see `proxy`); without it, no adoption."""
        address = socket_address(self.config["run"], self.config["host"], self.config.get("lock_dir", "/tmp"))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(address)
            listener.listen(4)
        except OSError:
            listener.close()
            return
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, ("listen", None))

    def adopt(self, now):
        """A proxy connected: it is our parent from now on (the old link, if still open, is dropped)."""
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        if peer_uid(connection) != os.getuid():
            connection.close()  # only an agent of our own user adopts us
            return
        connection.setblocking(False)
        # what the old parent did not read is dropped (it may end mid-line; the journal is replayed)
        self.parent_reading = False
        self.up_pending = bytearray()
        self.watch_parent()
        if self.parent is not None:
            self.parent.close()
        self.parent = connection
        self.in_fd = self.out_fd = connection.fileno()
        self.in_lines = LineBuffer()
        self.parent_reading = True
        self.watch_parent()
        self.logic.on_adopted(now)

    def start_stream(self, line):
        return self.start_command(line, None, None, stream=True)

    def command_input(self, data):
        """Queue `data` for a stream command's stdin, written as it reads (never blocking the agent:
        a command that stops reading, e.g. a frozen relay, must not stop this agent's heartbeats,
        which would make its parent take its whole subtree as lost)."""
        command = self.command
        if command is not None and command.process.stdin is not None and not command.stdin_closed:
            command.pending_input += data
            self.flush_input()

    def command_eof(self):
        """EOF on a stream command's stdin once what is queued was written."""
        command = self.command
        if command is not None and not command.stdin_closed:
            command.eof_wanted = True
            self.flush_input()

    def flush_input(self):
        command = self.command
        if command is None or command.process.stdin is None or command.stdin_closed:
            return
        stream = command.process.stdin
        while command.pending_input:
            try:
                done = os.write(stream.fileno(), command.pending_input[:READ_SIZE])
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except OSError:  # the command closed its stdin: what it did not read is dropped
                command.pending_input = b""
                command.eof_wanted = True
                break
            command.pending_input = command.pending_input[done:]
        waiting = bool(command.pending_input)
        if waiting != command.input_registered:
            if waiting:
                self.selector.register(stream, selectors.EVENT_WRITE, ("cmd-in", None))
            else:
                self.selector.unregister(stream)
            command.input_registered = waiting
        if command.eof_wanted and not waiting:
            command.stdin_closed = True
            try:
                stream.close()
            except OSError:
                pass

    def start_command(self, line, data, timeout, stream=False):
        stdin = subprocess.PIPE if data or stream else subprocess.DEVNULL
        release_r, release_w = os.pipe()

        def prepare():
            os.setpgrp()
            os.dup2(release_r, 3)

        try:
            process = subprocess.Popen(["sh", "-c", WATCHDOG, "kadeploy", line],
                                       stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       pass_fds=(3,), preexec_fn=prepare)
        except OSError as exc:
            os.close(release_r)
            os.close(release_w)
            return str(exc)
        os.close(release_r)
        self.command = Command(process, release_w, self.config["outputs_size"])
        self.command.stream = stream
        if stream:
            os.set_blocking(process.stdin.fileno(), False)
        self.selector.register(process.stdout, selectors.EVENT_READ, ("cmd", "stdout"))
        self.selector.register(process.stderr, selectors.EVENT_READ, ("cmd", "stderr"))
        if data:
            payload = base64.b64decode(data)
            feeder = threading.Thread(target=self._feed, args=(process.stdin, payload), daemon=True)
            feeder.start()
        return None

    @staticmethod
    def _feed(stream, payload):
        try:
            stream.write(payload)
            stream.close()
        except OSError:
            pass

    def kill_command(self):
        command = self.command
        if command is None or command.killed:
            return
        command.killed = True
        try:
            os.killpg(command.process.pid, signal.SIGKILL)
        except OSError:
            pass

    def spawn(self, host, address, config_line):
        remote = "exec %s -c %s" % (shlex.quote(self.config.get("python", "python3")),
                                    shlex.quote(self.config["source"]))
        if self.ssh_options is None:
            self.ssh_options = ssh_preferences(self.config["ssh"], self.config.get("prefer"))
        argv = list(self.config["ssh"]) + self.ssh_options + [address, remote]
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        except OSError as exc:
            return str(exc)
        child = Child(host, process)
        self.children[host] = child
        self.selector.register(process.stdout, selectors.EVENT_READ, ("child", child))
        self.selector.register(process.stderr, selectors.EVENT_READ, ("child-err", child))
        write_all(process.stdin.fileno(), config_line)
        return None

    def send_down(self, host, data):
        child = self.children.get(host)
        return child is not None and write_all(child.process.stdin.fileno(), data)

    def close_child(self, host, kill):
        child = self.children.pop(host, None)
        if child is None:
            return None, b""
        if kill:
            try:
                child.process.kill()
            except OSError:
                pass
        for fileobj in (child.process.stdout, child.process.stderr):
            try:
                self.selector.unregister(fileobj)
            except (KeyError, ValueError):
                pass
            fileobj.close()
        try:
            child.process.stdin.close()
        except OSError:
            pass
        try:
            status = child.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.process.kill()
            status = None
        return status, child.stderr

    # -- reading -------------------------------------------------------------------------------

    def on_command_output(self, which, fileobj):
        command = self.command
        try:
            chunk = os.read(fileobj.fileno(), READ_SIZE)
        except OSError:
            chunk = b""
        if chunk:
            if command.stream:
                self.logic.on_command_output(1 if which == "stdout" else 2, chunk)
            else:
                getattr(command, which).feed(chunk)
            return
        self.selector.unregister(fileobj)
        fileobj.close()
        command.open_streams -= 1

    def poll_command(self):
        command = self.command
        if command is None or command.done:
            return
        if command.status is None:
            status = command.process.poll()
            if status is None:
                return
            command.status = status
            if not command.killed:
                # released: the watchdog exits without killing what the command left behind
                write_all(command.release, b"x\n")
        if command.open_streams == 0:
            command.done = True
            os.close(command.release)
            command.pending_input = b""  # nobody left to read it
            self.command_eof()
            self.logic.on_command_end(command.status, command.stdout.text(), command.stderr.text())

    def on_child_output(self, child, fileobj, is_stderr, now):
        try:
            chunk = os.read(fileobj.fileno(), READ_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(fileobj)
            fileobj.close()
            child.open_streams -= 1
            if child.open_streams == 0:
                self.logic.end_child(child.host, killed=False)
            return
        self.logic.on_child_seen(child.host, now)
        if is_stderr:
            child.stderr = (child.stderr + chunk)[-4096:]
            return
        try:
            lines = child.lines.feed(chunk)
        except ValueError:
            self.logic.end_child(child.host, killed=True)
            return
        for line in lines:
            self.logic.on_child_line(child.host, line)

    def on_parent_input(self, now):
        try:
            chunk = os.read(self.in_fd, READ_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            self.parent_reading = False
            self.watch_parent()
            self.logic.on_parent_eof()
            return
        for line in self.in_lines.feed(chunk):
            self.logic.on_parent_line(line, now)

    # -- the loop -------------------------------------------------------------------------------

    def run(self):
        logic = self.logic
        try:
            os.set_blocking(self.out_fd, False)  # see send_up
        except OSError:
            pass
        logic.begin(time.monotonic())
        if self.lock is not None:
            self.listen()
        self.parent_reading = True
        self.watch_parent()
        for line in self.in_lines.feed(b""):  # what came with the configuration
            logic.on_parent_line(line, time.monotonic())
        heartbeat = self.config["heartbeat"]
        while True:
            logic.beat(time.monotonic())
            for key, events in self.selector.select(timeout=min(0.2, heartbeat)):
                kind, data = key.data
                now = time.monotonic()
                if kind == "parent":
                    if events & selectors.EVENT_WRITE and key.fd == self.out_fd:
                        self.flush_up()
                    if events & selectors.EVENT_READ and self.parent_reading and key.fd == self.in_fd:
                        self.on_parent_input(now)
                elif kind == "listen":
                    self.adopt(now)
                elif kind == "cmd":
                    self.on_command_output(data, key.fileobj)
                elif kind == "cmd-in":
                    self.flush_input()
                elif kind in ("child", "child-err"):
                    if self.children.get(data.host) is data:  # not closed earlier in this batch
                        self.on_child_output(data, key.fileobj, kind == "child-err", now)
            self.poll_command()
            if logic.tick(time.monotonic()):
                break
        if self.listener is not None:
            # first: from now on an agent started here for this run finds nobody and says `gone`
            self.listener.close()
        logic.close()
        self.drain_up(self.config["stall"])


def read_config(fd=0):
    """The first stdin line (the configuration) and whatever bytes followed it."""
    lines = LineBuffer()
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            raise SystemExit("kadeploy agent: no configuration on stdin")
        found = lines.feed(chunk)
        if found:
            rest = b"\n".join(found[1:]) + (b"\n" if len(found) > 1 else b"") + lines.data
            return json.loads(found[0]), rest


def connect_orphan(config):
    """A connection to this node's live agent of the run (its socket), or None when there is none."""
    address = socket_address(config["run"], config["host"], config.get("lock_dir", "/tmp"))
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(address)
    except OSError:
        connection.close()
        return None
    return connection


def proxy(connection, rest, in_fd=0, out_fd=1):
    """Be the pipe between our parent (stdin/stdout: the ssh that started us) and the node's live agent:
    it is adopted through us. Ends when either side does (each end then sees end of file)."""
    selector = selectors.DefaultSelector()
    selector.register(in_fd, selectors.EVENT_READ, "parent")
    selector.register(connection, selectors.EVENT_READ, "agent")
    try:
        if rest and not write_all(connection.fileno(), rest):
            return 0
        while True:
            for key, _ in selector.select():
                try:
                    chunk = os.read(key.fileobj if key.data == "parent" else connection.fileno(), READ_SIZE)
                except OSError:
                    chunk = b""
                if not chunk:
                    return 0
                if not write_all(connection.fileno() if key.data == "parent" else out_fd, chunk):
                    return 0
    finally:
        connection.close()


def main():
    # The lock files are kept: removing one would let a node of a lost relay run twice.
    # They live in the node's /tmp (a deployment environment's tmpfs) and are named by run.
    config, rest = read_config()
    connection = connect_orphan(config)
    if connection is None and os.path.exists(lock_path(config["run"], config["host"],
                                                       config.get("lock_dir", "/tmp"))):
        time.sleep(0.5)  # an agent that has just taken the lock is about to listen
        connection = connect_orphan(config)
    if connection is not None:
        return proxy(connection, rest)
    agent = Agent(config)
    agent.in_lines.data = rest
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
