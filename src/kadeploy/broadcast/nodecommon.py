"""Stdlib helpers shared by the broadcast's node agents (relay.py, btnode.py).

Each agent runs ON A NODE from `python3 -c <source> <json config>`: the server
ships this file's text followed by the agent's (agents.shipped_source), so it
must stay stdlib-only, compatible with python3 >= 3.9, with no `__main__`
block and no `from __future__` import (it is not the first statement of what
a node runs). Imported as a module (the server, the fake testbed, the tests),
an agent takes these names from here instead.
"""

import hashlib
import json
import sys
import threading
import zlib

_emit_lock = threading.Lock()


def event_line(event, **fields):
    """One event as the server reads it: a JSON object naming itself in "ev", on one line."""
    fields["ev"] = event
    return json.dumps(fields) + "\n"


def emit(event, **fields):
    """Write one event line for the server (stdout: the SSH channel, or the tree agent's pipe);
    threads write whole lines."""
    line = event_line(event, **fields)
    with _emit_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass


def commands():
    """The server's JSON commands on stdin, one a line, until EOF (the server is done, or gone);
    a line that is not JSON is reported (`error`) and skipped."""
    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            emit("error", message="bad command line: %r" % line[:200])
            continue
        yield command


class Crc32:
    """zlib.crc32 behind hashlib's update/hexdigest: a cheap stream check, opt-in.

    Every relay hashes every byte. With 16 relays sharing 2 cores, CRC-32
    (3-4 GB/s) instead of sha256 (1.1 GB/s with SHA-NI, ~0.4 without) cut the
    chain's CPU by a quarter (benchmarks/broadcast.py --digest crc32). It
    catches accidents (a relay dropping, repeating or shifting bytes on resume,
    a flipped byte) but not a forger: anyone on the network can rewrite the
    relay-to-relay TCP stream and keep its CRC. sha256 stays the default.
    """

    name = "crc32"

    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self):
        return "%08x" % self.value


def new_digest(name):
    """A hashlib object for `name`, or Crc32 for "crc32"."""
    return Crc32() if name == "crc32" else hashlib.new(name)
