"""The fake node's recognition of the tree agent and of the agent's command line (pure parsing)."""

from __future__ import annotations

import shlex

from kadeploy.remote.shell import env_prefix, wrap_command
from kadeploy.remote.tree import agent_source
from kadeploy_testbed.fake.agenthost import AGENT_SOURCE, command_of
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
