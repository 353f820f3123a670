"""No step of the engine is quadratic in the number of nodes (issue 15, point 3).

Node names that count their equality comparisons: a set or dict lookup of the
same name object compares nothing (hash, then identity), while `name in list`
compares it with every element before it. So the count stays near zero for
constant-time membership and grows as N^2 for list lookups, whatever the
machine's speed.
"""

from __future__ import annotations

from engine_fakes import FakeLibrary, deploy, fail_on

from kadeploy.engine import ImplementationSpec, ListOutput, Workflow
from kadeploy.engine.policy import merge_results, run_with_retries


class CountingName(str):
    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingName.comparisons += 1
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        CountingName.comparisons += 1
        return str.__ne__(self, other)

    __hash__ = str.__hash__


async def test_splitting_and_retrying_thousands_of_nodes_compares_names_a_linear_number_of_times():
    count = 2000
    nodes = [CountingName(f"node-{i}.c1") for i in range(1, count + 1)]
    half = nodes[::2]
    library = FakeLibrary({("SetDeploymentEnvUntrusted", "reboot"): fail_on(half, while_attempt_below=1),
                           ("BroadcastEnvKascade", "sync"): fail_on(nodes[::3], "disk full")})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)])
    CountingName.comparisons = 0
    results = await run_with_retries(
        lambda round_number: Workflow("Deploy", "c1", macrosteps, library, ListOutput(), wid="D-scale"), nodes, 2)
    merged = merge_results(results)
    assert len(merged.ok) + len(merged.ko) == count
    assert len(merged.ko) == len(nodes[::3])
    # a single list lookup per node would already be ~count^2 / 2 = 2,000,000 comparisons
    assert CountingName.comparisons < 20 * count, CountingName.comparisons


def test_merging_rounds_of_thousands_of_nodes_compares_names_a_linear_number_of_times():
    from kadeploy.engine.result import WorkflowResult

    count = 4000
    nodes = [CountingName(f"node-{i}.c1") for i in range(count)]
    first = WorkflowResult(ok=nodes[: count // 2], ko={node: "boom" for node in nodes[count // 2:]})
    second = WorkflowResult(ok=nodes[count // 2:])
    CountingName.comparisons = 0
    merged = merge_results([first, second])
    assert merged.ok == sorted(nodes, key=lambda n: int(n.split("-")[1].split(".")[0])) and not merged.ko
    assert CountingName.comparisons < 20 * count, CountingName.comparisons
