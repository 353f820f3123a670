"""The tree mode's own ssh-agent (remote/sshagent.py): it holds the key, and it never outlives the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kadeploy.remote.sshagent import ForwardedAgent
from tests.requirements import require

SCRIPT = """
import asyncio, sys
from pathlib import Path
from kadeploy.remote.sshagent import ForwardedAgent
async def main():
    agent = ForwardedAgent(Path(sys.argv[1]))
    print(await agent.start(), agent._pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


async def test_the_agent_holds_the_key_and_close_removes_it(tmp_path):
    require("sshd")
    key = _key(tmp_path)
    agent = ForwardedAgent(key)
    path = await agent.start()
    try:
        listed = subprocess.run(["ssh-add", "-L"], env={**os.environ, "SSH_AUTH_SOCK": path},
                                capture_output=True, text=True)
        assert listed.stdout.split()[:2] == Path(f"{key}.pub").read_text().split()[:2]
    finally:
        await agent.close()
    assert not os.path.exists(path) and agent.path is None


def test_the_agent_dies_with_the_server(tmp_path):
    require("sshd")
    server = subprocess.Popen([sys.executable, "-W", "ignore", "-c", SCRIPT, str(_key(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        path, pid = server.stdout.readline().split()
        assert Path(f"/proc/{pid}").exists()
    finally:
        server.send_signal(signal.SIGKILL)  # no clean-up code runs in the server
        server.wait(10)
    deadline = time.monotonic() + 20  # ssh-agent checks its command every 10 s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert not Path(path).exists()  # the agent removed its socket as it left
    Path(path).parent.rmdir()  # the server's temporary directory: its close() never ran
