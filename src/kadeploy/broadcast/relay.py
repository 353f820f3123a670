"""Broadcast relay: runs ON A NODE, receives the image stream, feeds it to the local
pipeline and forwards it to the next node(s).

This file is sent over the SSH channel and started with `python3 -c <source>
<json config>`, its source after nodecommon.py's (the helpers it shares with
btnode.py): both stay stdlib-only, compatible with python3 >= 3.9, importing
nothing from kadeploy on a node. The server talks to it through its stdin
(commands) and stdout (events), JSON lines: the server's SSH channel in flat
mode, the pipes of the executor's tree agent on the node in tree mode
(`remote/launch.py`).

Data path: upstream TCP socket -> ring buffer (recv_into, the one copy; the
digest is computed there, while the bytes are in the cache) -> (a) the local
pipeline `sh -c <sink>` through a pipe and (b) every child socket. On Linux the
ring is a memfd, so (a) is splice(2) and (b) sendfile(2) from it: the pages
themselves are passed on, not copied (`zero_copy`, on by default; without
memfd, splice or sendfile, or with "zero_copy": false, the same path with
write and send). A passed page is referenced until the pipeline has read it or
the child has it, so the ring never rewrites the last SINK_HOLD bytes spliced
into the pipeline, nor the last IN_FLIGHT bytes sent to a child.

Resumption (the fault-tolerant chain): every receiver, when a sender connects,
first writes the 8-byte offset it has reached; the sender resumes there from
its ring buffer. A receiver that has everything answers with the total, and
at the end of a stream it writes the total again as an acknowledgement.
A sender whose child refuses, resets, or does not take data for `stall`
seconds reports it (`bypass`) and, when it has fallbacks, moves on to the next
live node. A node whose own pipeline fails keeps relaying.

Tree repair: with `below` (every node under this one -> its children), a relay
whose child dies adopts that child's children, one sender each, resumed at
their own offsets; their ring readers hold the dead child's position until
they connect, so the bytes they need are still there (and recursively, for a
child that is dead as well).

Commands (stdin): {"op": "start", "children": [[[host, addr, port], ...fallbacks], ...],
                   "repair": bool, "below": {host: [[host, addr, port], ...]}}
                  {"op": "dead", "host": host};  EOF = quit.
Events (stdout):  ready {port, pid}; bypass {host, reason}; adopt {host, dead, offset};
                  done {received, digest, sink_status, sink_error, cpu, splice, sendfile}
                  (splice, sendfile: whether the zero-copy paths were used); error {message}.

The fake nodes of the testbed (`kadeploy_testbed.fake.relay`) speak this protocol
in-process: they import its definitions from here (OFFSET, event_line,
ResumeError, describe, new_digest, the defaults), so that it is stated once.
"""

import errno
import json
import mmap
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

# Shipped to a node, this source follows nodecommon.py's (agents.shipped_source), which defines
# these names; imported as a module, it takes them from there.
if "new_digest" not in globals():
    from kadeploy.broadcast.nodecommon import Crc32, commands, emit, event_line, new_digest  # noqa: F401

OFFSET = struct.Struct("!Q")
CHUNK = 4 * 1024 * 1024
# Socket buffers between relays, set explicitly (the kernel doubles them): the bytes in
# flight between two relays are then at most IN_FLIGHT whatever the host's tcp_rmem and
# tcp_wmem allow (tcp_rmem's maximum is 32 MiB on some hosts). 1 MiB is ~40 round trips
# of a 10 GbE LAN.
SOCKET_BUFFER = 1024 * 1024
IN_FLIGHT = 4 * SOCKET_BUFFER
# The smallest ring for which repairs are guaranteed (see repair_retention).
MIN_RING = 8 * IN_FLIGHT
# Bytes spliced into the local pipeline whose pages may still be referenced: those in its pipe
# (1 MiB) and, if its first command moves pipe buffers on with splice(2) instead of reading them
# (a `cat | tar` could), those in the next pipe (1 MiB at most unprivileged). 8 MiB covers a few
# such hops; it is a quarter of MIN_RING, below the 3/4 a repairing sender keeps anyway.
SINK_HOLD = 8 * 1024 * 1024
# errno of a descriptor that does not support splice/sendfile: use write/send instead.
NO_ZERO_COPY = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
# The server always sends its own values; these are for a relay started by hand.
DEFAULT_RING = MIN_RING
DEFAULT_STALL = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
F_SETPIPE_SZ = 1031
class Ring:
    """A circular buffer over the stream: offsets are absolute stream positions.

    The writer (receiver) may only overwrite bytes that every reader has
    consumed, minus `retain` bytes for readers that may have to resume an
    older offset on another node (the fault-tolerant chain).
    """

    def __init__(self, capacity, total, zero_copy=False):
        self.capacity = max(1, min(capacity, total))
        self.total = total
        self.fd = None  # the memfd behind the buffer, for splice/sendfile; None without zero copy
        self.buffer = None
        if zero_copy:
            self.fd, self.buffer = memfd_buffer(self.capacity)
        if self.buffer is None:
            # Anonymous memory, mapped lazily: a bytearray would zero every page once more.
            self.buffer = mmap.mmap(-1, self.capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.buffer)
        self.received = 0
        self.readers = {}
        self.retain = {}
        self.cond = threading.Condition()

    def oldest(self):
        return max(0, self.received - self.capacity)

    def _low(self):
        if not self.readers:
            return self.received
        low = min(offset - self.retain.get(name, 0) for name, offset in self.readers.items())
        # A ring that holds the whole stream is never overwritten: nothing to hold back.
        # Otherwise not clipped at 0: at the start of the stream too, the writer stays within
        # `capacity - retain` of a retaining reader (repair_retention counts on it).
        return max(0, low) if self.capacity >= self.total else low

    def slot(self, timeout):
        """A writable view at the current end of the stream, or None after `timeout`."""
        with self.cond:
            deadline = time.monotonic() + timeout
            while self.received - self._low() >= self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            space = self.capacity - (self.received - self._low())
            position = self.received % self.capacity
            size = min(space, self.capacity - position, CHUNK, self.total - self.received)
            return self.view[position:position + size]

    def commit(self, count):
        with self.cond:
            self.received += count
            self.cond.notify_all()

    def wait_data(self, offset, timeout):
        """Wait until bytes beyond `offset` exist; return the readable view (maybe empty)."""
        with self.cond:
            if self.received <= offset:
                self.cond.wait(timeout)
            if self.received <= offset:
                return None
            if offset < self.oldest():
                raise ResumeError("offset %d is no longer in the ring buffer" % offset)
            position = offset % self.capacity
            size = min(self.received - offset, self.capacity - position, CHUNK)
            return self.view[position:position + size]

    def set_reader(self, name, offset, retain=0):
        with self.cond:
            self.readers[name] = offset
            self.retain[name] = retain
            self.cond.notify_all()

    def drop_reader(self, name):
        with self.cond:
            self.readers.pop(name, None)
            self.retain.pop(name, None)
            self.cond.notify_all()

    def wait_received(self, count, timeout):
        """Wait until `count` bytes of the stream have been received; True if they have."""
        with self.cond:
            if self.received < count:
                self.cond.wait(timeout)
            return self.received >= count


def memfd_buffer(size):
    """(fd, shared mapping) of a memfd of `size` bytes, or (None, None) where there is none."""
    try:
        fd = os.memfd_create("kadeploy-ring", getattr(os, "MFD_CLOEXEC", 0))
    except (AttributeError, OSError):
        return None, None
    try:
        os.ftruncate(fd, size)
        return fd, mmap.mmap(fd, size)
    except OSError:
        os.close(fd)
        return None, None


class ResumeError(Exception):
    pass


class Relay:
    def __init__(self, config):
        self.total = int(config["total"])
        self.sink_command = config["sink"]
        self.stall = float(config.get("stall", DEFAULT_STALL))
        self.connect_timeout = float(config.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        self.corrupt_at = config.get("corrupt_at")  # test hook: flip the byte at this offset on arrival
        self.limit_rate = float(config.get("limit_rate") or 0)  # test hook: bytes/s taken from upstream
        self.ring = Ring(max(MIN_RING, int(config.get("ring", DEFAULT_RING))), max(self.total, 1),
                         zero_copy=bool(config.get("zero_copy", True)))
        self.digest = new_digest(config.get("digest", "sha256"))
        self.sendfile_works = True
        self.dead = set()
        self.dead_lock = threading.Lock()
        self.current = {}  # reader name -> (host, socket)
        self.below = {}  # tree repair: host under this node -> its children [host, addr, port]
        self.readers = 0
        self.readers_lock = threading.Lock()
        self.upstream_lock = threading.Lock()
        self.new_upstream = None
        self.stopping = False
        self.sink = None
        self.sink_stderr = tempfile.TemporaryFile()

    # local pipeline -------------------------------------------------------
    def start_sink(self):
        self.sink = subprocess.Popen(["sh", "-c", self.sink_command], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=self.sink_stderr)
        try:
            import fcntl
            fcntl.fcntl(self.sink.stdin.fileno(), F_SETPIPE_SZ, 1024 * 1024)
        except (OSError, ImportError):
            pass
        self.ring.set_reader("sink", 0)

    def sink_loop(self):
        """Feed every byte to the pipeline; a failed pipeline is only a local KO."""
        fd = self.sink.stdin.fileno()
        splice = self.ring.fd is not None and hasattr(os, "splice")  # os.splice: python >= 3.10
        hold = SINK_HOLD if splice else 0
        offset = 0
        failed = False
        while offset < self.total and not failed:
            view = self.ring.wait_data(offset, 1.0)
            if view is None:
                continue
            try:
                if splice:  # up to a pipe's worth, so that the reader's position stays exact
                    offset += os.splice(self.ring.fd, fd, len(view), offset_src=offset % self.ring.capacity)
                else:
                    offset += os.write(fd, view)
            except OSError as exc:
                if splice and exc.errno in NO_ZERO_COPY:
                    splice = False  # written on the next turn
                else:
                    failed = True
            self.ring.set_reader("sink", offset, hold)
        self.ring.drop_reader("sink")
        while not self.ring.wait_received(self.total, 1.0):  # the digest covers the whole stream
            pass
        try:
            self.sink.stdin.close()
        except OSError:
            pass
        status = self.sink.wait()
        self.sink_stderr.seek(0)
        error = self.sink_stderr.read()[-2000:].decode("utf-8", "replace").strip()
        if failed and status == 0:
            status = 1
            error = error or "the local pipeline stopped reading its input"
        times = os.times()
        emit("done", received=self.ring.received, digest=self.digest.hexdigest(),
             sink_status=status, sink_error=error,
             cpu=times.user + times.system + times.children_user + times.children_system,
             splice=splice, sendfile=self.ring.fd is not None and self.sendfile_works)

    # receiving --------------------------------------------------------------
    def accept_loop(self, listener):
        while not self.stopping:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.upstream_lock:
                if self.new_upstream is not None:
                    self.new_upstream.close()
                self.new_upstream = connection

    def receive_loop(self):
        upstream = None
        began = time.monotonic()
        while not self.stopping:
            with self.upstream_lock:
                fresh, self.new_upstream = self.new_upstream, None
            if fresh is not None:
                if upstream is not None:
                    upstream.close()
                upstream = fresh
                try:
                    upstream.settimeout(self.stall)
                    upstream.sendall(OFFSET.pack(self.ring.received))
                    upstream.settimeout(0.5)
                except OSError:
                    upstream.close()
                    upstream = None
            if upstream is None or self.ring.received >= self.total:
                time.sleep(0.05)
                continue
            slot = self.ring.slot(0.5)
            if slot is None:
                continue
            try:
                count = upstream.recv_into(slot)
            except socket.timeout:
                continue
            except OSError:
                count = 0
            if count == 0:
                upstream.close()
                upstream = None
                continue
            start = self.ring.received
            if self.corrupt_at is not None and start <= self.corrupt_at < start + count:
                slot[self.corrupt_at - start] ^= 0xFF
            self.digest.update(slot[:count])
            self.ring.commit(count)
            if self.limit_rate:
                ahead = self.ring.received / self.limit_rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            if self.ring.received >= self.total:
                try:
                    upstream.settimeout(self.stall)
                    upstream.sendall(OFFSET.pack(self.total))
                except OSError:
                    pass

    def receive_stdin(self):
        """Flat method: the stream is this process's stdin (one SSH stream per node)."""
        source = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
        while self.ring.received < self.total:
            slot = self.ring.slot(1.0)
            if slot is None:
                continue
            count = source.readinto(slot)
            if not count:
                break
            self.digest.update(slot[:count])
            self.ring.commit(count)

    # forwarding -------------------------------------------------------------
    def reader_name(self):
        with self.readers_lock:
            self.readers += 1
            return "child-%d" % self.readers

    def forward_loop(self, name, targets, repair, held=0):
        """Feed one child (or, with fallbacks, the first live one); `held` = where its reader starts."""
        retain = repair_retention(self.ring.capacity) if repair else 0
        if self.ring.fd is not None:
            retain = max(retain, IN_FLIGHT)  # pages sent with sendfile are referenced until the child has them
        queue = list(targets)
        # Registered before connecting, so that no byte this child needs is overwritten.
        self.ring.set_reader(name, held, retain)
        while queue and not self.stopping:
            host, address, port = queue[0]
            with self.dead_lock:
                known_dead = host in self.dead
            if known_dead:
                queue.pop(0)
                if repair:
                    self.adopt(host, held, retain)
                continue
            connection = None
            try:
                connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                connection.settimeout(self.connect_timeout)
                connection.connect((address, int(port)))
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.current[name] = (host, connection)
                connection.settimeout(self.stall)
                offset = OFFSET.unpack(recv_exact(connection, OFFSET.size))[0]
                if offset > self.total:
                    raise ResumeError("node reported offset %d beyond the stream" % offset)
                if offset < self.total:
                    if offset < self.ring.oldest():
                        raise ResumeError("offset %d is no longer in the ring buffer" % offset)
                    held = offset
                    self.ring.set_reader(name, offset, retain)
                    while offset < self.total:
                        view = self.ring.wait_data(offset, 1.0)
                        if view is None:
                            check_open(connection)  # no data to send: a dead child would go unnoticed
                            continue
                        offset += self.send_from_ring(connection, offset, view)
                        held = offset
                        self.ring.set_reader(name, offset, retain)
                    self.wait_ack(connection, host)
                held = self.total
                if not repair:
                    self.ring.drop_reader(name)
                    return
                # The child has the whole stream but may die before it has forwarded it all: stay
                # its predecessor until the broadcast ends, and feed its next live node(s) if it does.
                self.ring.set_reader(name, self.total, retain)
                connection.close()
                connection = None
                while not self.stopping:
                    with self.dead_lock:
                        if host in self.dead:
                            break
                    time.sleep(0.2)
                if self.stopping:
                    self.ring.drop_reader(name)
                    return
                queue.pop(0)
                self.adopt(host, held, retain)
                continue
            except (OSError, ResumeError) as exc:
                abort(connection)
                with self.dead_lock:
                    known_dead = host in self.dead
                    self.dead.add(host)
                if not known_dead and not self.stopping:
                    emit("bypass", host=host, reason=describe(exc), repair=repair)
                queue.pop(0)
                if not repair:
                    break
                self.adopt(host, held, retain)
            finally:
                self.current.pop(name, None)
                if connection is not None:
                    connection.close()
        self.ring.drop_reader(name)

    def send_from_ring(self, connection, offset, view):
        """Send some of `view`, the ring at stream `offset`, to a child: sendfile(2) from the memfd,
        or send(2) where that is not supported. Returns the bytes sent."""
        if self.ring.fd is not None and self.sendfile_works:
            try:
                return send_zero_copy(connection, self.ring.fd, offset % self.ring.capacity, len(view), self.stall)
            except OSError as exc:
                if exc.errno not in NO_ZERO_COPY:
                    raise
                self.sendfile_works = False
        try:
            return connection.send(view)
        except socket.timeout:
            raise socket.timeout("stalled: no data accepted for %gs" % self.stall)

    def adopt(self, host, offset, retain):
        """Tree repair: feed the children of dead `host` ourselves, each from its own offset.

        Their readers start at `offset`, where `host` was, before this child's reader is
        dropped: the ring keeps what they may need to resume (they are behind `host`)."""
        for target in self.below.get(host, ()):
            name = self.reader_name()
            self.ring.set_reader(name, offset, retain)
            emit("adopt", host=target[0], dead=host, offset=offset)
            thread(self.forward_loop, name, [target], True, offset)

    def wait_ack(self, connection, host):
        """The child acknowledges the end of the stream; a slow child is not a dead one."""
        connection.settimeout(1.0)
        data = b""
        while len(data) < OFFSET.size:
            with self.dead_lock:
                if host in self.dead:
                    raise ConnectionAbortedError("declared dead by the server")
            try:
                chunk = connection.recv(OFFSET.size - len(data))
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionResetError("connection closed before the end-of-stream acknowledgement")
            data += chunk

    def mark_dead(self, host):
        with self.dead_lock:
            self.dead.add(host)
        for current_host, connection in list(self.current.values()):
            if current_host == host:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def repair_retention(capacity):
    """Bytes a repairing sender keeps behind each child's offset, so that the child's own
    children can resume from it if the child dies.

    The child's writer blocks `capacity - retain` ahead of what it *sent* its child (G), which
    is ahead of what G received by the bytes in flight; we keep `retain` behind what we sent
    the child, ahead of what it received by the bytes in flight again. So G can resume from
    us if `2 * retain - capacity >= 2 * IN_FLIGHT`: with 3/4, half the ring must cover
    them, hence MIN_RING = 8 * IN_FLIGHT (twice the need). Half the ring (the old value)
    covered nothing: a slow successor of a dead node failed to resume."""
    return capacity * 3 // 4


def send_zero_copy(connection, fd, position, size, stall):
    """sendfile(2) from the ring to a child; waits at most `stall` seconds for room in the socket."""
    while True:
        try:
            return os.sendfile(connection.fileno(), fd, position, size)
        except BlockingIOError:  # the socket has a timeout, so its descriptor is non-blocking
            if not select.select([], [connection], [], stall)[1]:
                raise socket.timeout("stalled: no data accepted for %gs" % stall)


def abort(connection):
    """Close with a reset: what the kernel still queued for a failed child is dropped now, not sent
    later from ring pages that may hold other bytes by then."""
    if connection is None:
        return
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def check_open(connection):
    """Raise if the child closed or reset the connection (it sends nothing before its final ack)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if readable and not connection.recv(1, socket.MSG_PEEK):
        raise ConnectionResetError("connection closed by the node")


def recv_exact(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed by the node")
        data += chunk
    return data


def describe(exc):
    if isinstance(exc, socket.timeout):
        return str(exc) if str(exc) and str(exc) != "timed out" else "connection timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def thread(target, *args):
    worker = threading.Thread(target=target, args=args, daemon=True)
    worker.start()
    return worker


def main():
    config = json.loads(sys.argv[1])
    relay = Relay(config)
    relay.start_sink()
    sink_thread = thread(relay.sink_loop)
    if config.get("mode") == "stdin":
        relay.receive_stdin()
        sink_thread.join()
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # inherited by accepted sockets
    listener.bind(("0.0.0.0", int(config.get("port", 0))))
    listener.listen(16)
    listener.settimeout(0.5)
    thread(relay.accept_loop, listener)
    thread(relay.receive_loop)
    emit("ready", port=listener.getsockname()[1], pid=os.getpid())
    for command in commands():
        if command.get("op") == "start":
            repair = bool(command.get("repair"))
            relay.below = command.get("below") or {}
            for targets in command.get("children", []):
                thread(relay.forward_loop, relay.reader_name(), targets, repair)
        elif command.get("op") == "dead":
            relay.mark_dead(command["host"])
    # EOF on the control channel: the server is done with us (or gone).
    relay.stopping = True
    if relay.sink is not None and relay.sink.poll() is None and relay.ring.received < relay.total:
        relay.sink.kill()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
