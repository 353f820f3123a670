"""The executor against real sshd nodes (network namespaces on kbtbr0)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from kadeploy.errors import KadeployError
from kadeploy.remote import Executor

pytestmark = pytest.mark.root


async def _wait_gone(node, text: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = node.pids_matching(text)
        if not pids:
            return []
        await asyncio.sleep(0.1)
    return node.pids_matching(text)


async def test_run_gives_each_node_its_own_output_and_status(ssh_lab, executor):
    results = await executor.run(ssh_lab.hosts, 'echo "$KBT_NODE_DIR"; echo oops >&2; exit 3')
    assert set(results) == set(ssh_lab.hosts)
    for node in ssh_lab.nodes:
        result = results[node.hostname]
        assert result.exit_status == 3
        assert result.stdout.strip() == str(node.directory)
        assert result.stderr == "oops\n"  # the process-group marker is not part of stderr
        assert not result.ok and result.error is None


async def test_node_with_sshd_stopped_is_a_per_node_connection_error(ssh_lab):
    victim = ssh_lab.nodes[-1]
    ssh_lab.stop_sshd(victim)
    executor = Executor(ssh_lab.private_key, connect_timeout=5)
    try:
        results = await executor.run(ssh_lab.hosts, "true")
    finally:
        await executor.close()
        ssh_lab.start_sshd(victim)
        ssh_lab.wait_port(victim)
    assert results[victim.hostname].error == "Connection refused"
    assert results[victim.hostname].exit_status is None
    assert all(results[node.hostname].ok for node in ssh_lab.nodes[:-1])


async def test_timeout_kills_the_remote_process_group(ssh_lab, executor):
    node = ssh_lab.nodes[0]
    started = time.monotonic()
    results = await executor.run({node.hostname: node.address}, "sleep 731 & sleep 732; echo never", timeout=1.5)
    assert time.monotonic() - started < 10
    result = results[node.hostname]
    assert result.error is not None and "timeout" in result.error.lower()
    assert await _wait_gone(node, "sleep 73") == []


async def test_cancelling_the_caller_kills_the_remote_processes(ssh_lab, executor):
    node = ssh_lab.nodes[1]
    task = asyncio.ensure_future(executor.run({node.hostname: node.address}, "sleep 741"))
    deadline = time.monotonic() + 10
    while not node.pids_matching("sleep 741") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert node.pids_matching("sleep 741"), "the command never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_gone(node, "sleep 741") == []


async def test_same_stdin_reaches_every_node(ssh_lab, executor, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    expected = hashlib.sha256(payload).hexdigest()
    from_bytes = await executor.run(ssh_lab.hosts, "sha256sum", input=payload)
    source = tmp_path / "payload"
    source.write_bytes(payload)
    from_file = await executor.run(ssh_lab.hosts, "sha256sum", input=source)
    for results in (from_bytes, from_file):
        assert {result.stdout.split()[0] for result in results.values()} == {expected}


async def test_hostile_environment_values_arrive_literally(ssh_lab, executor):
    hostile = {
        "KADEPLOY_ENV": "'; touch /tmp/kbt-pwned; echo '",
        "KADEPLOY_ENV_KERNEL_PARAMS": '$(touch /tmp/kbt-pwned) `id` "quoted" \\ $HOME',
        "KADEPLOY_CLUSTER": "line1\nline2",
    }
    node = ssh_lab.nodes[2]
    results = await executor.run({node.hostname: node.address},
                                 'printf "%s|" "$KADEPLOY_ENV" "$KADEPLOY_ENV_KERNEL_PARAMS" "$KADEPLOY_CLUSTER"',
                                 env=hostile)
    assert results[node.hostname].stdout == "|".join(hostile.values()) + "|"
    assert not Path("/tmp/kbt-pwned").exists()
    with pytest.raises(KadeployError):
        await executor.run({node.hostname: node.address}, "true", env={"BAD NAME;": "x"})


async def test_put_copies_a_file_to_every_node(ssh_lab, executor, tmp_path):
    source = tmp_path / "key.pub"
    source.write_bytes(os.urandom(4096))
    results = await executor.run(ssh_lab.hosts, 'mkdir -p "$KBT_NODE_DIR/put"')
    assert all(result.ok for result in results.values())
    node = ssh_lab.nodes[3]
    results = await executor.put({node.hostname: node.address}, source,
                                 str(node.directory / "put" / "it's here"), mode=0o600)
    assert results[node.hostname].ok, results[node.hostname]
    copied = node.directory / "put" / "it's here"
    assert copied.read_bytes() == source.read_bytes()
    assert copied.stat().st_mode & 0o777 == 0o600


async def test_connections_are_reused_until_forgotten(ssh_lab, executor):
    node = ssh_lab.nodes[4]
    hosts = {node.hostname: node.address}
    first = (await executor.run(hosts, 'echo "$SSH_CLIENT"'))[node.hostname].stdout.split()[1]
    second = (await executor.run(hosts, 'echo "$SSH_CLIENT"'))[node.hostname].stdout.split()[1]
    executor.forget([node.hostname])
    third = (await executor.run(hosts, 'echo "$SSH_CLIENT"'))[node.hostname].stdout.split()[1]
    assert first == second  # same client port: same TCP connection
    assert third != first


async def test_dead_cached_connection_is_reopened_transparently(ssh_lab, executor):
    node = ssh_lab.nodes[5]
    hosts = {node.hostname: node.address}
    assert (await executor.run(hosts, "true"))[node.hostname].ok
    # "reboot": every process of the node dies, including the session of our cached connection
    ssh_lab.stop_sshd(node)
    ssh_lab.kill_node_processes(node)
    ssh_lab.start_sshd(node)
    ssh_lab.wait_port(node)
    await asyncio.sleep(0.2)
    result = (await executor.run(hosts, "echo back"))[node.hostname]
    assert result.ok, result
    assert result.stdout == "back\n"


async def test_output_is_truncated_to_the_limit(ssh_lab):
    node = ssh_lab.nodes[6]
    executor = Executor(ssh_lab.private_key, output_limit=1000)
    try:
        result = (await executor.run({node.hostname: node.address},
                                     "head -c 500000 /dev/zero | tr '\\0' a; echo done >&2"))[node.hostname]
    finally:
        await executor.close()
    assert result.ok
    assert result.stdout.startswith("a" * 1000)
    assert "499000 bytes truncated" in result.stdout
    assert result.stderr == "done\n"
