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
import shutil
import tempfile
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError


class ForwardedAgent:
    """An `ssh-agent -D` process of our own, with one key; `await start()`, `await close()`."""

    def __init__(self, private_key: Path) -> None:
        self._key = private_key
        self._directory: str | None = None
        self._process: asyncio.subprocess.Process | None = None
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
        self._process = await asyncio.create_subprocess_exec(
            "ssh-agent", "-D", "-a", socket_path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            async with asyncio.timeout(timeout):
                while not os.path.exists(socket_path):
                    if self._process.returncode is not None:
                        raise KadeployError(ErrorCode.BAD_CONFIGURATION, "ssh-agent exited at start")
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
        """Stop our ssh-agent (by its pid) and remove its socket directory."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                async with asyncio.timeout(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await process.wait()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self.path = None
