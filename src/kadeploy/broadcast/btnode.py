"""BitTorrent node agent: runs ON A NODE for the `bittorrent` broadcast method.

Like relay.py, this file is sent over the SSH channel (or by the executor's
tree agent) and started with
`python3 -c <source> <json config>`, after nodecommon.py's source (emit,
new_digest): stdlib-only (python3 >= 3.9), importing nothing from kadeploy on
a node. It drives `aria2c` (Debian's aria2), the
BitTorrent client that does the transfer; this agent only checks room, starts
it, watches it, and feeds the finished file to the local pipeline.

Why a stored copy: pieces arrive out of order, so the image is stored in the
deployment environment's store (the tmp partition, Kadeploy3's tarball_dir)
and fed to the sink once complete, as Kadeploy3 did.

Sequence:
 1. check the store: it must exist and hold the image (statvfs), else `refused`
    and exit, before anything is transferred; else `ready` {free}.
 2. stdin {"op": "start", "torrent": base64} -> aria2c joins the swarm
    (bound to this node's deployment address, no DHT, no LPD: the private
    torrent's tracker only). `progress` {written} about every second.
 3. aria2c's download-complete hook writes a marker: the agent reads the file,
    feeds it to `sh -c <sink>` and hashes it on the way (the end-to-end digest
    of the chain), then `done` {received, digest, sink_status, sink_error, cpu}.
    aria2c keeps seeding.
 4. EOF on stdin: the server is done with every node: aria2c is killed, the
    stored copy removed, exit.
A download that writes nothing for `stall` seconds, or an aria2c that exits
before the end, is `failed` {message}; the agent then exits.
"""

import base64
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Shipped to a node, this source follows nodecommon.py's (agents.shipped_source), which defines
# these names; imported as a module, it takes them from there.
if "new_digest" not in globals():
    from kadeploy.broadcast.nodecommon import commands, emit, new_digest  # noqa: F401

CHUNK = 4 * 1024 * 1024
PR_SET_PDEATHSIG = 1
TORRENT_NAME = "kadeploy-image"  # the name the server gives the torrent's single file


def store_room(store, total):
    """(free bytes, refusal message or None) for an image of `total` bytes in `store`."""
    if not os.path.isdir(store):
        return 0, "the store %s does not exist on the node" % store
    try:
        stats = os.statvfs(store)
    except OSError as exc:
        return 0, "cannot read the free space of %s: %s" % (store, exc.strerror or exc)
    free = stats.f_bavail * stats.f_frsize
    needed = total + 1024 * 1024  # aria2c's control file and the torrent beside the image
    if free < needed:
        return free, ("the image (%d bytes) does not fit in %s on the node: %d bytes free, %d needed"
                      % (total, store, free, needed))
    return free, None


def die_with_parent():
    """aria2c dies with this agent (a node whose agent is killed leaves the swarm)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def written_bytes(pid):
    """Bytes the process has written so far (/proc/<pid>/io), or None."""
    try:
        with open("/proc/%d/io" % pid) as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid):
    """CPU time of a running child so far (aria2c, still seeding: os.times() counts only reaped children)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Agent:
    def __init__(self, config):
        self.config = config
        self.total = int(config["total"])
        self.stall = float(config.get("stall", 30.0))
        self.directory = None
        self.aria = None
        self.aria_log = None
        self.finished = threading.Event()

    def prepare(self):
        free, refusal = store_room(self.config["store"], self.total)
        if refusal is not None:
            emit("refused", message=refusal, free=free)
            return False
        self.directory = tempfile.mkdtemp(prefix="kadeploy-bt-", dir=self.config["store"])
        emit("ready", free=free, pid=os.getpid())
        return True

    def start(self, torrent):
        torrent_path = os.path.join(self.directory, "image.torrent")
        with open(torrent_path, "wb") as out:
            out.write(base64.b64decode(torrent))
        marker = os.path.join(self.directory, "complete")
        hook = os.path.join(self.directory, "hook.sh")
        with open(hook, "w") as out:
            out.write("#!/bin/sh\n: > %s\n" % shlex.quote(marker))
        os.chmod(hook, 0o700)
        self.aria_log = tempfile.TemporaryFile()
        argv = ["aria2c", "--dir=" + self.directory, "--seed-ratio=0.0", "--file-allocation=none",
                "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--disable-ipv6=true",
                "--interface=" + self.config["address"], "--listen-port=" + self.config.get("ports", "6881-6999"),
                "--on-bt-download-complete=" + hook, "--console-log-level=warn", "--summary-interval=0",
                "--show-console-readout=false", "--auto-file-renaming=false", "--allow-overwrite=true",
                "--bt-max-peers=0", "--bt-tracker-interval=" + str(int(self.config.get("announce", 5))),
                "--stop-with-process=%d" % os.getpid()]
        if self.config.get("limit_rate"):  # test hook: bytes/s this node downloads
            argv.append("--max-overall-download-limit=%d" % int(self.config["limit_rate"]))
        argv.append(torrent_path)
        try:
            self.aria = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.aria_log,
                                         stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        except OSError as exc:
            emit("failed", message="cannot start aria2c on the node: %s" % (exc.strerror or exc))
            return
        threading.Thread(target=self.watch, args=(marker,), daemon=True).start()

    def aria_output(self):
        self.aria_log.seek(0)
        return self.aria_log.read()[-1500:].decode("utf-8", "replace").strip()

    def watch(self, marker):
        last, moved, reported = -1, time.monotonic(), 0.0
        while not os.path.exists(marker):
            status = self.aria.poll()
            if status is not None:
                emit("failed", message="aria2c exited (status %d) before the download ended: %s"
                     % (status, self.aria_output() or "no output"))
                self.finished.set()
                return
            now = time.monotonic()
            written = written_bytes(self.aria.pid)
            if written is not None and written != last:
                last, moved = written, now
            elif now - moved > self.stall:
                emit("failed", message="the download wrote nothing for %gs" % self.stall)
                self.finished.set()
                return
            if now - reported >= 1.0:
                emit("progress", written=max(written or 0, 0))
                reported = now
            time.sleep(0.1)
        self.feed()
        self.finished.set()

    def feed(self):
        """The stored image -> the local pipeline, hashed on the way (what the server compares)."""
        path = os.path.join(self.directory, TORRENT_NAME)
        digest = new_digest(self.config.get("digest", "sha256"))
        errors = tempfile.TemporaryFile()
        sink = subprocess.Popen(["sh", "-c", self.config["sink"]], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=errors)
        received, broken = 0, False
        try:
            with open(path, "rb") as source:
                while True:
                    data = source.read(CHUNK)
                    if not data:
                        break
                    digest.update(data)
                    received += len(data)
                    if not broken:
                        try:
                            sink.stdin.write(data)
                        except OSError:
                            broken = True
        except OSError as exc:
            emit("failed", message="cannot read the stored image: %s" % (exc.strerror or exc))
            sink.kill()
            return
        try:
            sink.stdin.close()
        except OSError:
            pass
        status = sink.wait()
        errors.seek(0)
        error = errors.read()[-2000:].decode("utf-8", "replace").strip()
        if broken and status == 0:
            status, error = 1, error or "the local pipeline stopped reading its input"
        times = os.times()
        emit("done", received=received, digest=digest.hexdigest(), sink_status=status, sink_error=error,
             cpu=times.user + times.system + times.children_user + times.children_system + cpu_seconds(self.aria.pid))

    def stop(self):
        if self.aria is not None and self.aria.poll() is None:
            self.aria.kill()
            self.aria.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def main():
    agent = Agent(json.loads(sys.argv[1]))
    if not agent.prepare():
        return
    try:
        for command in commands():
            if command.get("op") == "start" and agent.aria is None:
                agent.start(command["torrent"])
    finally:
        agent.stop()  # EOF: every node has finished (or the server is gone)


if __name__ == "__main__":
    main()
