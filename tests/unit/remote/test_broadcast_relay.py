"""The node relay without SSH: its ring buffer, and its resume protocol over local TCP."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from kadeploy.broadcast import relay
from kadeploy.broadcast.agents import shipped_source
from kadeploy.broadcast.pipeline import RELAY_SOURCE, relay_command
from tests.requirements import optional

OFFSET = struct.Struct("!Q")


def _fill(ring: relay.Ring, data: bytes) -> None:
    done = 0
    while done < len(data):
        slot = ring.slot(0.1)
        assert slot is not None
        count = min(len(slot), len(data) - done)
        slot[:count] = data[done:done + count]
        ring.commit(count)
        done += count


def test_ring_wraps_and_reads_back_absolute_offsets():
    ring = relay.Ring(capacity=10, total=25)
    ring.set_reader("sink", 0)
    _fill(ring, b"0123456789")
    assert ring.slot(0.05) is None  # full: the reader has consumed nothing
    assert bytes(ring.wait_data(4, 0.1)) == b"456789"
    ring.set_reader("sink", 7)
    _fill(ring, b"abcdefg")
    assert ring.received == 17 and ring.oldest() == 7
    view = ring.wait_data(8, 0.1)
    assert bytes(view) == b"89"  # up to the physical end of the buffer
    assert bytes(ring.wait_data(10, 0.1)) == b"abcdefg"
    with pytest.raises(relay.ResumeError):
        ring.wait_data(3, 0.1)  # overwritten


def test_ring_retains_bytes_behind_a_reader_that_may_resume_elsewhere():
    ring = relay.Ring(capacity=10, total=100)
    ring.set_reader("child", 4, retain=4)
    _fill(ring, b"x" * 10)
    ring.set_reader("child", 10, retain=4)
    slot = ring.slot(0.05)
    assert slot is not None and len(slot) == 6  # only offsets 0..5 may be overwritten
    ring.commit(6)
    assert ring.oldest() == 6 and ring.slot(0.05) is None
    assert bytes(ring.wait_data(6, 0.1)) == b"xxxx"  # 6..9 are still there to resume from


def test_a_lagging_successor_of_a_dead_node_can_still_resume_from_its_predecessor():
    """Worst case for a repair: the successor S is the slowest node, so the dead node X is as far
    ahead of S as its ring allows, and the predecessor P as far ahead of what it sent X as its own
    ring allows; X had not received all P sent (bytes in flight). S's offset must still be in P's
    ring. Scaled down from the smallest ring and the relays' socket buffers."""
    capacity = 1 << 16
    in_flight = capacity * relay.IN_FLIGHT // relay.MIN_RING  # on each hop
    retain = relay.repair_retention(capacity)
    successor_offset = 0  # the start of the stream is the worst case (nothing below 0 to retain)
    dead = relay.Ring(capacity, total=100 * capacity)
    dead.set_reader("successor", successor_offset + in_flight, retain)  # what the dead node sent it
    _fill_until_blocked(dead)
    predecessor = relay.Ring(capacity, total=100 * capacity)
    predecessor.set_reader("dead", dead.received + in_flight, retain)
    _fill_until_blocked(predecessor)
    assert predecessor.oldest() <= successor_offset


def test_a_retaining_reader_holds_the_writer_back_from_the_start_of_the_stream():
    ring = relay.Ring(capacity=10, total=100)
    ring.set_reader("child", 0, retain=4)
    _fill_until_blocked(ring)
    assert ring.received == 6  # capacity - retain ahead of the child, as later in the stream


def _fill_until_blocked(ring: relay.Ring) -> None:
    while (slot := ring.slot(0.0)) is not None:
        ring.commit(len(slot))


def test_ring_is_never_larger_than_the_stream():
    assert relay.Ring(capacity=1 << 30, total=1000).capacity == 1000


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "relay closed the connection"
        data += chunk
    return data


def test_relay_resumes_a_new_upstream_at_the_offset_it_reached(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    out = tmp_path / "out"
    config = {"total": len(data), "sink": f"cat > {out}", "stall": 5, "ring": 1 << 20}
    process = subprocess.Popen([sys.executable, "-c", shipped_source(RELAY_SOURCE), json.dumps(config)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(process.stdout.readline())
        assert ready["ev"] == "ready"
        first = socket.create_connection(("127.0.0.1", ready["port"]), timeout=5)
        assert OFFSET.unpack(_recv_exact(first, 8))[0] == 0
        first.sendall(data[:1_000_000])
        first.close()  # the upstream dies mid-stream
        # the new upstream replaces the dead one: whatever the relay had read of the old
        # connection by then is its offset, and the new upstream resends from exactly there
        second = socket.create_connection(("127.0.0.1", ready["port"]), timeout=5)
        offset = OFFSET.unpack(_recv_exact(second, 8))[0]
        assert 0 <= offset <= 1_000_000
        second.sendall(data[offset:])
        assert OFFSET.unpack(_recv_exact(second, 8))[0] == len(data)  # end-of-stream acknowledgement
        done = json.loads(process.stdout.readline())
        assert done["ev"] == "done" and done["sink_status"] == 0
        assert done["digest"] == hashlib.sha256(data).hexdigest()
        assert out.read_bytes() == data
    finally:
        process.stdin.close()
        process.wait(timeout=5)


def test_tree_relay_adopts_the_children_of_a_dead_child_at_their_own_offset(tmp_path):
    """Tree repair, relay side: the child dies mid-stream; the relay feeds the grandchild from the
    offset the grandchild reports (not from zero, not from where the child was)."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    resume_at = 123_457
    config = {"total": len(data), "sink": "cat > /dev/null", "stall": 5, "ring": 8 << 20}
    process = subprocess.Popen([sys.executable, "-c", shipped_source(RELAY_SOURCE), json.dumps(config)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child, grandchild = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    child.settimeout(10)
    grandchild.settimeout(10)
    try:
        ready = json.loads(process.stdout.readline())
        below = {"child": [["grandchild", "127.0.0.1", grandchild.getsockname()[1]]]}
        process.stdin.write(json.dumps({"op": "start", "repair": True, "below": below,
                                        "children": [[["child", "127.0.0.1", child.getsockname()[1]]]]}) + "\n")
        process.stdin.flush()
        upstream = socket.create_connection(("127.0.0.1", ready["port"]), timeout=5)
        assert OFFSET.unpack(_recv_exact(upstream, 8))[0] == 0
        upstream.sendall(data[:1_000_000])
        feed, _ = child.accept()
        feed.sendall(OFFSET.pack(0))
        _recv_exact(feed, 1000)
        feed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        feed.close()  # the child dies (RST) with the stream half sent
        events = [json.loads(process.stdout.readline()) for _ in range(2)]
        assert [e["ev"] for e in events] == ["bypass", "adopt"] and events[1]["host"] == "grandchild"
        adopted, _ = grandchild.accept()
        adopted.settimeout(10)
        adopted.sendall(OFFSET.pack(resume_at))
        upstream.sendall(data[1_000_000:])
        assert _recv_exact(adopted, len(data) - resume_at) == data[resume_at:]
        adopted.sendall(OFFSET.pack(len(data)))
        done = json.loads(process.stdout.readline())
        assert done["ev"] == "done" and done["digest"] == hashlib.sha256(data).hexdigest()
    finally:
        child.close()
        grandchild.close()
        process.stdin.close()
        process.wait(timeout=5)


def test_the_shipped_relay_runs_without_kadeploy(tmp_path):
    """What a node runs is self-contained: with no site-packages (-S) nor this checkout (-I, another
    cwd), emit and new_digest come from the prepended nodecommon source."""
    config = {"total": 5, "sink": f"cat > {tmp_path / 'out'}", "mode": "stdin", "digest": "crc32"}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", shipped_source(RELAY_SOURCE), json.dumps(config)],
                          input=b"hello", capture_output=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout.decode().splitlines()[-1])
    assert (event["ev"], event["received"], event["digest"]) == ("done", 5, "%08x" % zlib.crc32(b"hello"))
    assert (tmp_path / "out").read_bytes() == b"hello"


def test_relay_command_quotes_its_config():
    command = relay_command({"sink": "tar -C '/mnt/dest' -xzf -; echo $HOME"})
    completed = subprocess.run(["sh", "-c", command.replace("exec python3 -c", "printf '%s\\n'", 1)],
                               capture_output=True, text=True, timeout=10)
    assert completed.stdout.splitlines()[-1] == json.dumps({"sink": "tar -C '/mnt/dest' -xzf -; echo $HOME"})


def test_crc32_digest_is_incremental_and_matches_zlib() -> None:
    data = os.urandom(300_000)
    digest = relay.new_digest("crc32")
    for start in range(0, len(data), 65_536):
        digest.update(memoryview(data)[start:start + 65_536])
    assert digest.hexdigest() == f"{zlib.crc32(data):08x}"
    assert relay.new_digest("sha256").hexdigest() == hashlib.sha256(b"").hexdigest()


# Zero copy: the ring is a memfd; children are fed with sendfile(2), the pipeline with splice(2).
# Those pass the ring's pages, not copies, so the ring must not rewrite a page that a socket or a
# pipe still holds. The tests below stream more than the ring (it wraps); the `reads_late` ones to
# a reader that waits before reading, which gets other bytes if a held page was rewritten.

WRAPPING = 2 * relay.MIN_RING + 12_345  # the ring (MIN_RING) wraps twice


@pytest.fixture(scope="module")
def wrapping_data() -> bytes:
    return os.urandom(WRAPPING)


class _RelayProcess:
    """A relay started as the server starts it, with its events read by a thread (timeouts)."""

    def __init__(self, config: dict, python: str = sys.executable) -> None:
        self.process = subprocess.Popen([python, "-c", shipped_source(RELAY_SOURCE), json.dumps(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.next_event()
        assert ready["ev"] == "ready"
        self.port = ready["port"]

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def next_event(self, timeout: float = 60) -> dict:
        return self.events.get(timeout=timeout)

    def done(self) -> dict:
        while (event := self.next_event())["ev"] != "done":
            pass
        return event

    def start(self, children: list, repair: bool = True) -> None:
        self.process.stdin.write(json.dumps({"op": "start", "children": children, "repair": repair}) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


def _feed(port: int, data: bytes) -> None:
    """The server's side of one relay: send the stream, wait for the end-of-stream acknowledgement."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as upstream:
        assert OFFSET.unpack(_recv_exact(upstream, 8))[0] == 0
        upstream.sendall(data)
        assert OFFSET.unpack(_recv_exact(upstream, 8))[0] == len(data)


@pytest.mark.parametrize("zero_copy", [True, False], ids=["zero-copy", "forced-fallback"])
def test_chain_of_relays_delivers_a_stream_longer_than_the_ring_byte_exact(tmp_path, wrapping_data, zero_copy):
    outs = [tmp_path / "first", tmp_path / "second"]
    relays = [_RelayProcess({"total": WRAPPING, "sink": f"cat > {out}", "stall": 10, "ring": relay.MIN_RING,
                             "zero_copy": zero_copy}) for out in outs]
    try:
        relays[0].start([[["second", "127.0.0.1", relays[1].port]]])
        relays[1].start([])
        _feed(relays[0].port, wrapping_data)
        expected = hashlib.sha256(wrapping_data).hexdigest()
        for each, out in zip(relays, outs):
            done = each.done()
            assert (done["digest"], done["sink_status"]) == (expected, 0)
            assert out.read_bytes() == wrapping_data
            assert done["sendfile"] is zero_copy
            assert done["splice"] is (zero_copy and hasattr(os, "splice"))
    finally:
        for each in relays:
            each.stop()


def test_pipeline_that_reads_late_gets_the_bytes_spliced_to_it_not_newer_ones(tmp_path, wrapping_data):
    """The pipe holds references to ring pages until the pipeline reads them; its first command
    may also move them on into the next pipe with splice(2) (as a `cat | tar` could): the ring
    keeps SINK_HOLD bytes behind what it spliced for that."""
    out = tmp_path / "out"
    mover = ("import fcntl, os\nfcntl.fcntl(1, 1031, 1 << 20)\n"
             "while os.splice(0, 1, 1 << 20):\n    pass\n")
    sink = f"{shlex.quote(sys.executable)} -c {shlex.quote(mover)} | {{ sleep 1; cat > {out}; }}"
    node = _RelayProcess({"total": WRAPPING, "sink": sink, "stall": 10, "ring": relay.MIN_RING})
    try:
        node.start([])
        _feed(node.port, wrapping_data)
        done = node.done()
        assert (done["digest"], done["sink_status"]) == (hashlib.sha256(wrapping_data).hexdigest(), 0)
        assert out.read_bytes() == wrapping_data
    finally:
        node.stop()


@pytest.mark.parametrize("repair", [False, True], ids=["chain", "kascade"])
def test_child_that_reads_late_gets_the_bytes_sent_to_it_not_newer_ones(wrapping_data, repair):
    """sendfile(2) leaves ring pages in the socket (and, on one host, in the child's receive queue)
    until the child has read them: the ring keeps IN_FLIGHT bytes behind what it sent."""
    child = socket.create_server(("127.0.0.1", 0))
    child.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, relay.SOCKET_BUFFER)  # as a relay's listener
    child.settimeout(30)
    node = _RelayProcess({"total": WRAPPING, "sink": "cat > /dev/null", "stall": 10, "ring": relay.MIN_RING})
    try:
        node.start([[["child", "127.0.0.1", child.getsockname()[1]]]], repair=repair)
        feeder = threading.Thread(target=_feed, args=(node.port, wrapping_data), daemon=True)
        feeder.start()
        feed, _ = child.accept()
        feed.settimeout(30)
        feed.sendall(OFFSET.pack(0))
        time.sleep(1)  # the socket buffers fill up; the relay receives on as far as its ring allows
        assert _recv_exact(feed, WRAPPING) == wrapping_data
        feed.sendall(OFFSET.pack(WRAPPING))
        feeder.join(30)
        assert node.done()["sendfile"] is True
        feed.close()
    finally:
        child.close()
        node.stop()


def _python(version: str) -> str | None:
    """A working python`version` interpreter (on PATH, or one of pyenv's), or None."""
    found = [shutil.which(f"python{version}")]
    found += sorted(str(path) for path in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
    for candidate in filter(None, found):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def test_relay_on_python_3_9_writes_the_pipeline_without_splice(tmp_path, wrapping_data):
    """os.splice appeared in python 3.10: on 3.9 the relay writes to the pipeline, sendfile stays."""
    python39 = _python("3.9")
    if python39 is None:
        # optional: Debian 12 (CI) ships no 3.9; the splice-less path is also covered on 3.11 above
        optional("no python3.9 here (pyenv install 3.9 to run it)")
    out = tmp_path / "out"
    node = _RelayProcess({"total": WRAPPING, "sink": f"cat > {out}", "stall": 10, "ring": relay.MIN_RING},
                         python=python39)
    try:
        node.start([])
        _feed(node.port, wrapping_data)
        done = node.done()
        assert (done["splice"], done["sendfile"], done["sink_status"]) == (False, True, 0)
        assert done["digest"] == hashlib.sha256(wrapping_data).hexdigest()
        assert out.read_bytes() == wrapping_data
    finally:
        node.stop()


def test_the_flat_launch_sends_the_same_relay_command_as_before():
    """Flat mode is unchanged: the shared line and a node's argument make the one-string command."""
    from kadeploy.broadcast import agents
    from kadeploy.remote.launch import node_command
    config = {"sink": "tar -C '/mnt/dest' -xzf -; echo $HOME", "total": 3}
    assert node_command(agents.agent_line(RELAY_SOURCE), agents.agent_argument(config)) == relay_command(config)
