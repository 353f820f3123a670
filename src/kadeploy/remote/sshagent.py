"""The server's own ssh-agent, holding the deployment key, forwarded to the tree's relays.

How the lower hops of a tree run authenticate (docs/design.md, "Tree mode"):
the server starts one `ssh-agent` bound to a private socket, adds the
deployment key to it, and forwards it on its connections to the first-level
relays (asyncssh agent forwarding); each relay's `ssh -A` forwards it one hop
further. No private key is copied to a node: a relay can ask the agent for
signatures only while its session is open, which is what Kadeploy3 does with
its connector (`ssh -A`, TakTuk's self-propagation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import shutil
import tempfile
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError


#: what ssh-agent runs as its command: it tells the agent's pid, then waits for the end of its
#: stdin (a pipe only the server holds). ssh-agent exits when its command ends, so the agent
#: goes with the server however the server ends (ssh-agent is setgid on Debian, which clears
#: PR_SET_PDEATHSIG at exec: the pipe is what works).
WATCH = 'echo "$SSH_AGENT_PID"; read _ || true'


class ForwardedAgent:
    """An `ssh-agent` of our own, with one key, tied to this process; `await start()`, `await close()`."""

    def __init__(self, private_key: Path) -> None:
        self._key = private_key
        self._directory: str | None = None
        self._watch: asyncio.subprocess.Process | None = None
        self._pid: int | None = None
        self.path: str | None = None

    async def start(self, timeout: float = 10.0) -> str:
        """Start the agent and load the key; returns the socket path (raises KadeployError)."""
        if self.path is not None:
            return self.path
        for tool in ("ssh-agent", "ssh-add"):
            if shutil.which(tool) is None:
                raise KadeployError(ErrorCode.BAD_CONFIGURATION,
                                    f"The tree mode of the executor needs {tool} (openssh-client) on the server")
        self._directory = tempfile.mkdtemp(prefix="kadeploy-agent-")
        socket_path = os.path.join(self._directory, "agent.sock")
        try:
            async with asyncio.timeout(timeout):
                self._watch = await asyncio.create_subprocess_exec(
                    "ssh-agent", "-a", socket_path, "sh", "-c", WATCH, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
                assert self._watch.stdout is not None
                line = await self._watch.stdout.readline()
                self._pid = int(line.strip())
                while not os.path.exists(socket_path):
                    await asyncio.sleep(0.02)
                adder = await asyncio.create_subprocess_exec(
                    "ssh-add", "-q", str(self._key), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "SSH_AUTH_SOCK": socket_path})
                _, error = await adder.communicate()
        except TimeoutError:
            await self.close()
            raise KadeployError(ErrorCode.BAD_CONFIGURATION,
                                f"ssh-agent did not start within {timeout:g}s") from None
        except ValueError:
            await self.close()
            raise KadeployError(ErrorCode.BAD_CONFIGURATION, "ssh-agent did not start") from None
        except BaseException:
            await self.close()
            raise
        if adder.returncode != 0:
            await self.close()
            raise KadeployError(ErrorCode.BAD_CONFIGURATION, f"ssh-add could not load {self._key}: "
                                f"{error.decode(errors='replace').strip()}")
        self.path = socket_path
        return socket_path

    async def close(self) -> None:
        """End the watcher (the agent follows), stop the agent by its pid now, remove the socket directory."""
        watch, self._watch = self._watch, None
        if watch is not None and watch.returncode is None:
            if watch.stdin is not None:
                watch.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await watch.wait()
            if watch.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    watch.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await watch.wait()
        pid, self._pid = self._pid, None
        if pid is not None:
            # the agent would notice its command's end within 10 s; do not leave it that long
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self.path = None
