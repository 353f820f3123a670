"""The fake node's recognition of the tree agent and of the agent's command line (pure parsing), and
its hosting of the agent's `Logic`: an orphan adopted by the next session of its run."""

from __future__ import annotations

import asyncio
import json
import shlex

from kadeploy.remote.shell import env_prefix, wrap_command
from kadeploy.remote.tree import agent_source
from kadeploy_testbed.fake.agenthost import AGENT_SOURCE, HostedAgent, _ChildChannel, command_of
from kadeploy_testbed.fake.shell import classify, unwrap


def test_the_servers_agent_line_is_recognised_with_its_source():
    line = wrap_command(f"exec python3 -c {shlex.quote(agent_source())}")
    command = classify(unwrap(line).command)
    assert command.kind == "agent" and command.args["source"] == AGENT_SOURCE
    # a relay's ssh child sends it unwrapped
    assert classify(f"exec python3 -c {shlex.quote(agent_source())}").kind == "agent"


def test_a_modified_agent_is_still_an_agent_but_not_this_checkouts_source():
    other = agent_source().replace("PROTOCOL = 1", "PROTOCOL = 2")
    command = classify(f"exec python3 -c {shlex.quote(other)}")
    assert command.kind == "agent" and command.args["source"] != AGENT_SOURCE


def test_the_tree_command_line_gives_back_the_command():
    line = f"{env_prefix({'A': 'x y'})}exec sh -c {shlex.quote('echo hi; exit 3')}"
    assert command_of(line) == "echo hi; exit 3"
    assert command_of("exec sh -c 'true'") == "true"
    assert command_of("rm -rf / ; exec sh -c true") is None
    assert command_of("exec sh -c 'unterminated") is None


class _Context:
    def __init__(self) -> None:
        self.next = 100

    def pgid(self) -> int:
        self.next += 1
        return self.next


class _Node:
    """What a HostedAgent uses of a FakeNode; its one command waits for `release`."""

    def __init__(self) -> None:
        self.hostname = "n1"
        self.context = _Context()
        self.agent_runs = 0
        self.agent_locks: set[tuple[str, str]] = set()
        self.tree_agents: dict = {}
        self.release = asyncio.Event()
        self.commands = 0

    async def execute(self, command, text, channel):
        from kadeploy_testbed.fake.node import CommandOutcome
        self.commands += 1
        await self.release.wait()
        return CommandOutcome(0, stdout="hi\n")


def _config() -> dict:
    return {"host": "n1", "run": "r1", "line": "exec sh -c 'echo hi'", "stream": False, "timeout": None,
            "input": None, "arity": 0, "outputs_size": 1000, "heartbeat": 0.2, "stall": 5.0,
            "orphan": 30.0, "connect_timeout": 5.0, "source": AGENT_SOURCE}


async def _until(lines: list[dict], kind: str, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for event in lines:
                if event["ev"] == kind:
                    return event
            await asyncio.sleep(0.02)


async def test_a_fake_nodes_orphan_agent_is_adopted_by_the_next_session_of_its_run():
    node = _Node()
    first_out: list[dict] = []
    second_out: list[dict] = []
    first = _ChildChannel(lambda data: first_out.extend(_events(data)), lambda data: None)
    second = _ChildChannel(lambda data: second_out.extend(_events(data)), lambda data: None)
    first.inbox.put_nowait((json.dumps(_config()) + "\n").encode())
    session = asyncio.ensure_future(HostedAgent(node, first).run())
    await _until(first_out, "started")
    first.inbox.put_nowait(b"")                         # its parent link ends: an orphan
    await asyncio.sleep(0.3)
    assert not session.done() and node.commands == 1    # its command goes on
    second.inbox.put_nowait((json.dumps(_config()) + "\n").encode())
    proxy = asyncio.ensure_future(HostedAgent(node, second).run())
    hello = await _until(second_out, "hello")
    assert hello["adopted"] is True and hello["subtree"] == ["n1"]
    await _until(second_out, "synced")
    assert [event["ev"] for event in second_out if event["ev"] != "beat"][:2] == ["hello", "started"]
    node.release.set()
    result = await _until(second_out, "result")        # the result comes through the new link
    assert result["stdout"] == "hi\n" and result["status"] == 0
    assert not any(event["ev"] == "result" for event in first_out)
    second.inbox.put_nowait(b'{"op":"quit"}\n')
    async with asyncio.timeout(5):
        assert await session == 0 and await proxy == 0
    assert node.commands == 1 and node.agent_runs == 1 and node.tree_agents == {}


def _events(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_a_relays_config_is_read_from_its_last_word_even_when_the_source_holds_the_same_pattern():
    from kadeploy.broadcast.agents import agent_command
    from kadeploy.broadcast.pipeline import RELAY_SOURCE
    config = {"sink": "cat > '{x}'", "next": None, "note": " '{tricky}"}
    line = agent_command(RELAY_SOURCE, config)
    assert classify(line).kind == "relay" and classify(line).args["config"] == config
    # a config that is not the last word's JSON: nothing is guessed
    assert classify(line + " extra").kind == "unknown"
