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
  `heartbeat`) is killed and reported `lost`; a child whose ssh ended before
  it said `hello` is reported `failed` with ssh's reason.

Its command dies with it: a watchdog in the command's process group kills the
group when the agent's end of a pipe closes without the release line (the
agent was killed), and the agent kills the group on timeout, `kill` and EOF.
Its ssh children get SIGTERM when it dies (PR_SET_PDEATHSIG), so a killed
relay takes its subtree's connections (and through them its subtree) down.

Configuration (first stdin line): {"host", "run", "line" (the shell line to
run), "timeout" (s or null), "input" (base64 or null), "arity", "outputs_size",
"heartbeat", "stall", "connect_timeout", "lock_dir", "ssh" (argv prefix for a
child, the address follows), "prefer" (ssh algorithms to put first),
"python", "source" (this file, to propagate)}.
Commands (stdin): {"op": "grant", "to": host, "nodes": [[host, address], ...]},
                  {"op": "quit"} (forwarded to every child), {"op": "kill"}; EOF = kill.
Events (stdout):  hello, beat, want {n}, started, result {status, signal, stdout,
                  stderr, error}, failed {error} (a child that never started),
                  lost (a child that went away); every event names its `host`.
"""

import base64
import errno
import hashlib
import json
import os
import selectors
import shlex
import signal
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


class Child(object):
    """One node this agent started: the ssh process running its agent."""

    def __init__(self, host, process, now):
        self.host = host
        self.process = process
        self.lines = LineBuffer()
        self.stderr = b""
        self.last_seen = now
        self.hello = False
        self.ended = False
        self.open_streams = 2


class Command(object):
    """This node's own command: process, captures, deadline, watchdog release pipe."""

    def __init__(self, process, release, limit, deadline):
        self.process = process
        self.release = release
        self.stdout = Capture(limit)
        self.stderr = Capture(limit)
        self.deadline = deadline
        self.open_streams = 2
        self.status = None
        self.timed_out = False
        self.killed = False


class Agent(object):
    """The event loop of one node's agent (selectors, no threads but the stdin feeder)."""

    def __init__(self, config, out_fd=1, in_fd=0):
        self.config = config
        self.host = config["host"]
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.selector = selectors.DefaultSelector()
        self.children = {}
        self.routes = {}
        self.command = None
        self.reported = False
        self.want_pending = False
        self.quitting = False
        self.parent_alive = True
        self.in_lines = LineBuffer()
        self.lock = None
        self.ssh_options = None  # the algorithm preferences, read from ssh once, at the first child

    # -- events up ---------------------------------------------------------------------------

    def send(self, data):
        if self.parent_alive and not write_all(self.out_fd, data):
            self.parent_alive = False

    def emit(self, event, **fields):
        fields.setdefault("host", self.host)
        self.send(event_line(event, **fields))

    # -- the own command ---------------------------------------------------------------------

    def start_command(self):
        if not self.parent_alive:
            self.reported = True  # the parent went away before we said hello: run nothing
            return
        self.lock = lock_path(self.config["run"], self.host, self.config.get("lock_dir", "/tmp"))
        try:
            first = take_lock(self.lock)
        except OSError as exc:
            self.lock = None
            self.finish_command(None, None, error="Cannot take the run lock on the node: %s" % exc)
            return
        if not first:
            self.lock = None
            self.finish_command(None, None, error="Already started by another relay for this run "
                                                  "(that relay was lost: the result is unknown)")
            return
        self.emit("started")
        if not self.parent_alive:
            # nobody heard "started" and nothing ran: free the lock for whoever gets the node
            os.unlink(self.lock)
            self.lock = None
            self.reported = True
            return
        data = self.config.get("input")
        stdin = subprocess.PIPE if data else subprocess.DEVNULL
        release_r, release_w = os.pipe()

        def prepare():
            os.setpgrp()
            os.dup2(release_r, 3)

        try:
            process = subprocess.Popen(["sh", "-c", WATCHDOG, "kadeploy", self.config["line"]],
                                       stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       pass_fds=(3,), preexec_fn=prepare)
        except OSError as exc:
            os.close(release_r)
            os.close(release_w)
            self.finish_command(None, None, error="Cannot start the command: %s" % exc)
            return
        os.close(release_r)
        timeout = self.config.get("timeout")
        deadline = time.monotonic() + timeout if timeout else None
        self.command = Command(process, release_w, self.config["outputs_size"], deadline)
        self.selector.register(process.stdout, selectors.EVENT_READ, ("cmd", "stdout"))
        self.selector.register(process.stderr, selectors.EVENT_READ, ("cmd", "stderr"))
        if data:
            payload = base64.b64decode(data)
            feeder = threading.Thread(target=self._feed, args=(process.stdin, payload), daemon=True)
            feeder.start()

    @staticmethod
    def _feed(stream, payload):
        try:
            stream.write(payload)
            stream.close()
        except OSError:
            pass

    def on_command_output(self, which, fileobj):
        command = self.command
        try:
            chunk = os.read(fileobj.fileno(), READ_SIZE)
        except OSError:
            chunk = b""
        if chunk:
            getattr(command, which).feed(chunk)
            return
        self.selector.unregister(fileobj)
        fileobj.close()
        command.open_streams -= 1

    def kill_command(self):
        command = self.command
        if command is None or command.killed:
            return
        command.killed = True
        try:
            os.killpg(command.process.pid, signal.SIGKILL)
        except OSError:
            pass

    def poll_command(self, now):
        command = self.command
        if command is None or self.reported:
            return
        if command.status is None:
            status = command.process.poll()
            if status is not None:
                command.status = status
                if not command.killed:
                    # released: the watchdog exits without killing what the command left behind
                    write_all(command.release, b"x\n")
            elif command.deadline is not None and now >= command.deadline:
                command.timed_out = True
                self.kill_command()
        if command.status is not None and command.open_streams == 0:
            os.close(command.release)
            status = command.status
            error = None
            sig = None
            if command.timed_out:
                error = "Command timeout after %gs" % self.config["timeout"]
                status = None
            elif status < 0:
                try:
                    sig = signal.Signals(-status).name[3:]
                except ValueError:
                    sig = str(-status)
                error = "Killed by signal %s" % sig
                status = None
            self.finish_command(status, sig, error=error,
                                stdout=command.stdout.text(), stderr=command.stderr.text())

    def finish_command(self, status, sig, error=None, stdout="", stderr=""):
        self.reported = True
        self.emit("result", status=status, signal=sig, stdout=stdout, stderr=stderr, error=error)

    # -- children ------------------------------------------------------------------------------

    def child_config(self, host):
        config = dict(self.config)
        config["host"] = host
        return (json.dumps(config, separators=(",", ":")) + "\n").encode()

    def spawn(self, host, address, now):
        remote = "exec %s -c %s" % (shlex.quote(self.config.get("python", "python3")),
                                    shlex.quote(self.config["source"]))
        if self.ssh_options is None:
            self.ssh_options = ssh_preferences(self.config["ssh"], self.config.get("prefer"))
        argv = list(self.config["ssh"]) + self.ssh_options + [address, remote]
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        except OSError as exc:
            self.emit("failed", host=host, error="Cannot run ssh on the relay %s: %s" % (self.host, exc))
            return
        child = Child(host, process, now)
        self.children[host] = child
        self.routes[host] = child
        self.selector.register(process.stdout, selectors.EVENT_READ, ("child", child))
        self.selector.register(process.stderr, selectors.EVENT_READ, ("child-err", child))
        write_all(process.stdin.fileno(), self.child_config(host))

    def on_child_output(self, child, fileobj, is_stderr):
        try:
            chunk = os.read(fileobj.fileno(), READ_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(fileobj)
            fileobj.close()
            child.open_streams -= 1
            if child.open_streams == 0:
                self.end_child(child, killed=False)
            return
        child.last_seen = time.monotonic()
        if is_stderr:
            child.stderr = (child.stderr + chunk)[-4096:]
            return
        try:
            lines = child.lines.feed(chunk)
        except ValueError:
            self.end_child(child, killed=True)
            return
        for line in lines:
            self.on_child_event(child, line)

    def on_child_event(self, child, line):
        try:
            event = json.loads(line)
            kind = event["ev"]
            host = event["host"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "beat":
            return
        if kind == "hello":
            if host == child.host:
                child.hello = True
            self.routes[host] = child
        self.send(line + b"\n")

    def end_child(self, child, killed):
        if child.ended:
            return
        child.ended = True
        if killed:
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
        del self.children[child.host]
        for host in [host for host, route in self.routes.items() if route is child]:
            del self.routes[host]
        if self.quitting:
            return
        if not child.hello:
            if killed:
                error = "Agent silent for %gs after its ssh started: taken as lost" % (
                    self.config["stall"] + self.config["connect_timeout"])
            else:
                error = describe_ssh_failure(child.stderr, status)
            self.emit("failed", host=child.host, error=error)
        else:
            self.emit("lost", host=child.host)

    def check_children(self, now):
        stall = self.config["stall"]
        for child in list(self.children.values()):
            if child.ended:
                continue
            if child.process.poll() is not None and child.open_streams == 0:
                self.end_child(child, killed=False)
            elif now - child.last_seen > (stall if child.hello else stall + self.config["connect_timeout"]):
                self.end_child(child, killed=True)

    def send_down(self, child, data):
        if not child.ended and not write_all(child.process.stdin.fileno(), data):
            self.end_child(child, killed=True)

    def maybe_want(self):
        free = self.config["arity"] - len(self.children)
        if free > 0 and not self.want_pending and not self.quitting:
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
            for host, address in message.get("nodes", []):
                self.spawn(host, address, now)
        elif op == "quit":
            self.quitting = True
            for child in list(self.children.values()):
                self.send_down(child, line + b"\n")
        elif op == "kill":
            self.shutdown(kill=True)

    def on_parent_input(self, now):
        try:
            chunk = os.read(self.in_fd, READ_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            self.parent_alive = False
            self.shutdown(kill=True)
            return
        for line in self.in_lines.feed(chunk):
            self.on_parent_line(line, now)

    def shutdown(self, kill):
        self.quitting = True
        if kill:
            self.kill_command()
            for child in list(self.children.values()):
                self.send_down(child, b'{"op":"kill"}\n')
        self.stopping = True

    # -- the loop -------------------------------------------------------------------------------

    def run(self):
        self.stopping = False
        self.emit("hello", protocol=PROTOCOL, pid=os.getpid())
        self.selector.register(self.in_fd, selectors.EVENT_READ, ("parent", None))
        self.start_command()
        self.maybe_want()
        for line in self.in_lines.feed(b""):  # what came with the configuration
            self.on_parent_line(line, time.monotonic())
        heartbeat = self.config["heartbeat"]
        next_beat = time.monotonic() + heartbeat
        stop_deadline = None
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self.emit("beat")
                next_beat = now + heartbeat
            for key, _ in self.selector.select(timeout=min(0.2, heartbeat)):
                kind, data = key.data
                now = time.monotonic()
                if kind == "parent":
                    self.on_parent_input(now)
                elif kind == "cmd":
                    self.on_command_output(data, key.fileobj)
                elif kind in ("child", "child-err"):
                    if not data.ended:
                        self.on_child_output(data, key.fileobj, kind == "child-err")
            now = time.monotonic()
            self.poll_command(now)
            self.check_children(now)
            if not self.quitting:
                self.maybe_want()
            if self.quitting:
                if stop_deadline is None:
                    stop_deadline = now + self.config["stall"]
                command_done = self.command is None or self.reported or self.command.killed
                if (not self.children and command_done) or now >= stop_deadline or not self.parent_alive:
                    break
        self.kill_command()
        for child in list(self.children.values()):
            self.end_child(child, killed=True)


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


def main():
    # The lock files are kept: removing one would let a node of a lost relay run twice.
    # They live in the node's /tmp (a deployment environment's tmpfs) and are named by run.
    config, rest = read_config()
    agent = Agent(config)
    agent.in_lines.data = rest
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
