"""Automatic redeployment of failed nodes (issue 4(b)).

Users wrap Kadeploy3 in loops that redeploy the failed nodes a few times; this
does it server side: round 1 runs every node, each next round runs the nodes
that failed the round before (from scratch, or from where they stopped with
`resume=True`), until every node is OK, `max_rounds` rounds have run, or the
share of OK nodes reaches `min_success`.
"""

from __future__ import annotations

from collections.abc import Callable

from kadeploy.engine.output import OutputSink
from kadeploy.engine.result import WorkflowResult
from kadeploy.engine.workflow import Workflow
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold, sort_key

WorkflowFactory = Callable[[int], Workflow]
"""Builds the workflow of round N (1-based): a Workflow runs once, so each round needs a new one."""


async def run_with_retries(make_workflow: WorkflowFactory, nodes: list[str], max_rounds: int,
                           min_success: float | None = None, *, output: OutputSink | None = None,
                           resume: bool = False) -> list[WorkflowResult]:
    """Run rounds of the workflow on the failed nodes; return every round's result, in order."""
    if max_rounds < 1:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"The number of rounds must be at least 1 (got {max_rounds})")
    if min_success is not None and not 0.0 < min_success <= 1.0:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"The success ratio must be in ]0, 1] (got {min_success})")
    nodes = list(dict.fromkeys(nodes))
    succeeded: set[str] = set()
    results: list[WorkflowResult] = []
    todo = nodes
    for round_number in range(1, max_rounds + 1):
        if round_number > 1 and output is not None:
            output.log(0, f"Round {round_number}/{max_rounds}: retrying on {len(todo)} failed "
                          f"node{'s' if len(todo) > 1 else ''} {fold(todo)}")
        previous = results[-1] if results else None
        points = previous.resume_points if (resume and previous is not None) else None
        result = await make_workflow(round_number).run(todo, resume=points)
        results.append(result)
        succeeded.update(result.reported_ok)
        ratio = len(succeeded) / len(nodes)
        if output is not None:
            output.log(0, f"Round {round_number}/{max_rounds}: {len(succeeded)}/{len(nodes)} nodes OK "
                          f"({ratio:.0%})")
        todo = sorted(result.ko, key=sort_key)
        if not todo or (min_success is not None and ratio >= min_success):
            break
    return results


def merge_results(results: list[WorkflowResult]) -> WorkflowResult:
    """The overall outcome of several rounds: a node's last round decides."""
    merged = WorkflowResult()
    # sets while merging (a node leaves its old bucket in O(1)), sorted lists at the end
    ok: set[str] = set()
    brk: set[str] = set()
    processing: set[str] = set()
    for result in results:
        merged.duration += result.duration
        merged.records.update(result.records)
        for node in (*result.ok, *result.brk, *result.ko, *result.processing):
            merged.ko.pop(node, None)
            merged.resume_points.pop(node, None)
            ok.discard(node)
            brk.discard(node)
            processing.discard(node)
        ok.update(result.ok)
        brk.update(result.brk)
        processing.update(result.processing)
        merged.ko.update(result.ko)
        merged.resume_points.update(result.resume_points)
        merged.aborted = result.aborted
    merged.ok = sorted(ok, key=sort_key)
    merged.brk = sorted(brk, key=sort_key)
    merged.processing = sorted(processing, key=sort_key)
    return merged
