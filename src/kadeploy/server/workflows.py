"""The workflow registry: launching, polling, cancelling and cleaning operations (room `server`).

A `Workflow` is one running or finished operation as clients poll it: it is
the `WorkflowSink` its runner writes to (timestamped log lines with one read
cursor per resource, per-node debug lines, per-node states, live status) and
it knows how to render itself for `GET /%OP/:wid`. The `WorkflowRegistry`
creates them (persisting the workflow and claiming its nodes in one DB
transaction), runs each in an asyncio task, records the end (node states,
stats, claims released) and cancels them on DELETE, on rights removal and at
shutdown.

Memory is bounded per workflow: each feed keeps at most `MAX_FEED_CHARS`
characters (node command outputs reach the debug feed and are the user's to
make as large as they like), and when the workflow ends it drops its status
provider, the only link to the runner's state (fetched files, engine state),
so that a finished workflow kept for polling until autoclean holds its
answers, not what the run loaded. At most `MAX_FINISHED_WORKFLOWS` finished
workflows are kept (a power status claims no node, so nothing else bounds how
many a user starts): beyond, the oldest finished are forgotten before
autoclean would have.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kadeploy.catalog.resolved import ResolvedEnvironment
from kadeploy.boot.process import run_process
from kadeploy.db import Database
from kadeploy.db import stats as db_stats
from kadeploy.db import workflows as db_workflows
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.operations import WID_PREFIX, Operation, OperationOutcome, OperationRunner, RebootRequest
from kadeploy.server.logfiles import OperationLogs
from kadeploy.server.metrics import Metrics
from kadeploy.states import END_STATE, START_STATE, DbNodeState, NodeState, WorkflowState
from kadeploy.templates import fill

HOOK_TIMEOUT = 20.0  # seconds, as Kadeploy3
log = logging.getLogger("kadeploy.server")

CANCEL_TIMEOUT = 30.0
MAX_FEED_CHARS = 32 * 1024 * 1024  # per workflow and feed (logs, debugs)
MAX_FINISHED_WORKFLOWS = 10000  # kept for polling until autoclean; beyond, the oldest finished are forgotten
REBOOT_KIND_STATE = {"deploy_env": DbNodeState.DEPLOY_ENV, "recorded_env": DbNodeState.RECORDED_ENV}


@dataclass
class _Line:
    timestamp: float
    key: str | None     # cluster for logs, node for debugs
    text: str

    def render(self) -> str:
        return f"{self.timestamp:.6f}|{self.text}"


class _Feed:
    """Timestamped lines, each reader (resource path) getting only what it has not read yet."""

    def __init__(self, max_chars: int = MAX_FEED_CHARS) -> None:
        self.lines: list[_Line] = []
        self.cursors: dict[str | None, int] = {}
        self.max_chars = max_chars
        self.chars = 0
        self.truncated = False

    def append(self, key: str | None, text: str) -> None:
        if self.truncated:
            return
        if self.chars + len(text) > self.max_chars:  # the rest is dropped, once said so
            self.truncated = True
            self.lines.append(_Line(time.time(), key, f"(output truncated: more than {self.max_chars} characters)"))
            return
        self.chars += len(text)
        for line in text.splitlines() or [""]:
            self.lines.append(_Line(time.time(), key, line))

    def unread(self, reader: str | None) -> bool:
        return self.cursors.get(reader, 0) < len(self.lines)

    def read(self, reader: str | None, *, dry_run: bool = False) -> str:
        """The lines `reader` has not read yet; a dry run leaves them unread."""
        start = self.cursors.get(reader, 0)
        if not dry_run:
            self.cursors[reader] = len(self.lines)
        selected = [line for line in self.lines[start:] if reader is None or line.key == reader]
        return "".join(line.render() + "\n" for line in selected)


class Workflow:
    """One operation as clients see it; also the sink its runner reports to."""

    def __init__(self, op: Operation, discarded: list[str], start_time: float,
                 files: OperationLogs | None = None) -> None:
        self.op = op
        #: server.conf `logs` files: the debug file gets a copy of the output lines
        self.files = files
        self.discarded = discarded
        self.start_time = start_time
        self.end_time: float | None = None
        self.done = False
        self.aborted = False
        self.error: KadeployError | None = None
        self.outcome: OperationOutcome | None = None
        self.task: asyncio.Task[None] | None = None
        self.logs = _Feed()
        self.debugs = _Feed()
        self.states: dict[str, dict[str, Any]] = {}
        self._status_provider: Callable[[], dict[str, Any]] | None = None
        for node in discarded:
            self.states[node] = {"macro": "", "micro": "", "state": NodeState.DISCARDED,
                                 "error": "The node is already involved in another operation"}

    @property
    def wid(self) -> str:
        return self.op.wid

    @property
    def user(self) -> str:
        return self.op.user

    # -- WorkflowSink ---------------------------------------------------
    def log(self, cluster: str | None, level: int, text: str) -> None:
        if level <= self.op.verbose_level:
            self.logs.append(cluster, text)
        if self.files is not None:
            self.files.output(self.op.wid, self.op.user, level, text)

    def debug(self, node: str, text: str) -> None:
        if self.op.debug:
            self.debugs.append(node, text)

    def node_state(self, hostname: str, macro: str, micro: str, state: str,
                   error: str | None = None, out: str | None = None) -> None:
        entry: dict[str, Any] = {"macro": macro, "micro": micro, "state": state}
        if error:
            entry["error"] = error
        if out is not None:
            entry["out"] = out
        self.states[hostname] = entry

    def set_status_provider(self, provider: Callable[[], dict[str, Any]]) -> None:
        self._status_provider = provider

    def release_run(self) -> None:
        """Forget the runner's live state (its status provider reaches every file and step the run loaded).

        The request as received (up to a 1 MB body), kept for the resume record, is in the database by now.
        """
        self._status_provider = None
        self.op.request = {}

    # -- polling resources ----------------------------------------------
    def status(self) -> dict[str, Any]:
        """Live per-cluster, per-step view, as the runner reports it."""
        return self._status_provider() if self._status_provider and not self.done else {}

    def read_logs(self, cluster: str | None = None, *, dry_run: bool = False) -> str:
        if cluster is not None and cluster not in self.op.nodes:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"The cluster {cluster!r} is not part of {self.wid}")
        return self.logs.read(cluster, dry_run=dry_run)

    def read_debugs(self, node: str | None = None, *, dry_run: bool = False) -> str:
        if node is not None and node not in self.op.hostnames:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"The node {node!r} is not part of {self.wid}")
        return self.debugs.read(node, dry_run=dry_run)

    def info(self, *, details: bool) -> dict[str, Any]:
        """`GET /%OP/:wid`: full for the owner and admins, reduced for others.

        Keys and their order are Kadeploy3's `work_get` (server/kaworkflow.rb): kanodes3 prints them.
        """
        nodes = self.op.hostnames
        info: dict[str, Any] = {"wid": self.wid, "user": self.user, "done": self.done,
                                "error": self.error is not None or self.aborted, "start_time": int(self.start_time)}
        if not details:
            info["nodes"] = nodes
            return info
        if self.op.environment is not None:
            env = self.op.environment
            info["environment"] = {"id": env.id, "user": env.user, "name": env.name, "version": env.version}
        if not info["error"]:  # Kadeploy3's work_get: a failed workflow shows no logs, debugs nor nodes
            info["logs"] = self.logs.unread(None)
            if self.op.debug:  # only when a debugger exists (kaworkflow.rb `if info[:debugger]`)
                info["debugs"] = self.debugs.unread(None)
            if self.done and self.outcome is not None:
                info["nodes"] = {"ok": self.outcome.ok, "ko": self.outcome.ko}
            elif self.done:
                info["nodes"] = {"ok": [], "ko": nodes}
            else:
                info["nodes"] = {"ok": [], "ko": [], "processing": nodes}
        info["time"] = round((self.end_time or time.time()) - self.start_time, 2)
        return info

    def resources(self, path: str) -> dict[str, Any]:
        """The launch response's `resources` map."""
        base = f"{path}/{self.wid}"
        resources: dict[str, Any] = {"resource": base, "log": f"{base}/logs",
                                     "logs": {cluster: f"{base}/logs/{cluster}" for cluster in self.op.nodes},
                                     "state": f"{base}/state", "status": f"{base}/status", "error": f"{base}/error"}
        if self.op.debug:
            resources["debug"] = f"{base}/debugs"
            resources["debugs"] = {node: f"{base}/debugs/{node}" for node in self.op.hostnames}
        return resources


def new_wid(kind: str) -> str:
    """`D-<uuid>`, `R-`, `P-`, `C-`."""
    return WID_PREFIX[kind] + str(uuid.uuid4())


@dataclass(frozen=True)
class RunningCap:
    """How many workflows a user may have running at once, and the server.conf key that says so."""

    limit: int
    key: str


class WorkflowRegistry:
    """All workflows of this server, by id; runs them and persists their start and end."""

    def __init__(self, database: Database, runner: OperationRunner, metrics: Metrics,
                 hooks: dict[str, str] | None = None, *, files: OperationLogs | None = None,
                 log_to_db: bool = True) -> None:
        self.database = database
        self.runner = runner
        self.metrics = metrics
        self.workflows: dict[str, Workflow] = {}
        #: server.conf hooks/end_of_{deployment,reboot,power}, run when a client asked `--hook`
        self.hooks = dict(hooks or {})
        #: server.conf `logs/logfile` and `logs/debugfile`; `logs/database` (stats rows in the `log` table)
        self.files = files
        self.log_to_db = log_to_db
        #: launches between their cap check and their registration (the claim awaits the database)
        self._launching: dict[str, int] = {}

    def get(self, wid: str, kind: str | None = None) -> Workflow:
        """The workflow `wid` (of `kind`'s family if given), else error 1."""
        workflow = self.workflows.get(wid)
        if workflow is None or (kind is not None and WID_PREFIX[workflow.op.kind] != WID_PREFIX[kind]):
            raise KadeployError(ErrorCode.INVALID_WORKFLOW_ID, f"Workflow {wid!r} not found")
        return workflow

    def of_kind(self, kind: str) -> list[Workflow]:
        prefix = WID_PREFIX[kind]
        return [wf for wf in self.workflows.values() if wf.wid.startswith(prefix)]

    def running(self) -> list[Workflow]:
        return [wf for wf in self.workflows.values() if not wf.done]

    def check_cap(self, user: str, cap: RunningCap | None) -> None:
        """Error 15 when `user` already has `cap.limit` workflows running or being launched.

        Checked and counted before the launch's first await, so that a flood of
        concurrent requests cannot all pass the check before any is registered.
        """
        if cap is None or cap.limit <= 0:
            return
        running = sum(1 for wf in self.workflows.values() if not wf.done and wf.user == user)
        running += self._launching.get(user, 0)
        if running >= cap.limit:
            raise KadeployError(ErrorCode.EXECUTE_ERROR,
                                f"{user} already has {running} running operations, the most server.conf "
                                f"security/{cap.key} ({cap.limit}) allows: wait for one to end")

    async def launch(self, op: Operation, cap: RunningCap | None = None) -> Workflow:
        """Persist `op`, claim its nodes atomically and start running it (error 15 beyond `cap`).

        Nodes held by other workflows are discarded (error 14 if none is left),
        unless `op.force`. Power-status operations only read and claim nothing.
        """
        self.check_cap(op.user, cap)
        self._launching[op.user] = self._launching.get(op.user, 0) + 1
        try:
            return await self._launch(op)
        finally:
            self._launching[op.user] -= 1
            if not self._launching[op.user]:
                del self._launching[op.user]

    async def _launch(self, op: Operation) -> Workflow:
        start_time = time.time()
        discarded: list[str] = []
        if op.kind != "power-status":
            start = db_workflows.WorkflowStart(wid=op.wid, kind=op.kind, user=op.user, nodes=op.hostnames,
                                               force=op.force, node_state=START_STATE[op.kind],
                                               environment=_env_ref(op.environment), start_time=start_time)
            claimed, discarded = await self.database.run(lambda s: db_workflows.start_workflow(s, start))
            kept = set(claimed)
            op.nodes = {cluster: [n for n in nodes if n in kept] for cluster, nodes in op.nodes.items()}
            op.nodes = {cluster: nodes for cluster, nodes in op.nodes.items() if nodes}
        workflow = Workflow(op, discarded, start_time, self.files)
        if discarded:
            workflow.log(None, 0, f"The nodes {fold(discarded)} are already involved in another operation, "
                                  "let's discard them")
        self.workflows[op.wid] = workflow
        self._forget_oldest_finished(MAX_FINISHED_WORKFLOWS)
        self.metrics.workflow_started(op.kind)
        workflow.task = asyncio.create_task(self._execute(workflow), name=op.wid)
        return workflow

    async def rehearse(self, op: Operation) -> tuple[list[str], list[str]]:
        """What `launch(op)` would do, done in a rolled-back transaction: (nodes it would run on, discarded).

        The claim is tried for real, so a dry run is refused as the launch
        would be (error 14 when every node is busy); nothing is persisted,
        claimed or started.
        """
        if op.kind == "power-status":
            return op.hostnames, []
        start = db_workflows.WorkflowStart(wid=op.wid, kind=op.kind, user=op.user, nodes=op.hostnames,
                                           force=op.force, node_state=START_STATE[op.kind],
                                           environment=_env_ref(op.environment), start_time=time.time())
        return await self.database.run(lambda s: db_workflows.start_workflow(s, start), dry_run=True)

    async def _execute(self, workflow: Workflow) -> None:
        op = workflow.op
        try:
            workflow.outcome = await self.runner.run(op, workflow)
        except asyncio.CancelledError:
            workflow.aborted = True
            await self._record_end(workflow)
            raise
        except KadeployError as exc:
            workflow.error = exc
            workflow.log(None, 0, f"Error: {exc.message}")
        except Exception as exc:  # a runner bug must not kill the server nor leave nodes claimed
            log.exception("workflow %s failed", op.wid)
            workflow.error = KadeployError(ErrorCode.EXECUTE_ERROR, f"Internal error in {op.wid}: {exc}")
            workflow.log(None, 0, f"Error: {workflow.error.message}")
        await self._record_end(workflow)

    async def _record_end(self, workflow: Workflow) -> None:
        op = workflow.op
        workflow.end_time = time.time()
        self.metrics.workflow_finished(op.kind)
        outcome = workflow.outcome
        if workflow.aborted:
            state, node_states = WorkflowState.ABORTED, {node: DbNodeState.ABORTED for node in op.hostnames}
            for node in op.hostnames:
                previous = workflow.states.get(node, {})
                workflow.node_state(node, previous.get("macro", ""), previous.get("micro", ""), NodeState.ABORTED)
        elif outcome is None:
            state, node_states = WorkflowState.ERROR, {node: DbNodeState.ABORTED for node in op.hostnames}
        else:
            state = WorkflowState.DONE
            ok_state, ko_state = END_STATE.get(op.kind, ("", ""))
            if isinstance(op.options, RebootRequest):  # reference 5.2: what the node runs after these reboot kinds
                ok_state = REBOOT_KIND_STATE.get(op.options.kind, ok_state)
            node_states = {node: ok_state if result.state != NodeState.KO else ko_state
                           for node, result in outcome.nodes.items()} if ok_state else {}
            for node in op.options.prod_env_nodes if isinstance(op.options, RebootRequest) else ():
                if node_states.get(node) == DbNodeState.RECORDED_ENV:
                    node_states[node] = DbNodeState.PROD_ENV
            for node, result in outcome.nodes.items():
                current = workflow.states.get(node, {})
                if current.get("state") != result.state or result.error:
                    workflow.node_state(node, current.get("macro", ""), current.get("micro", ""), result.state,
                                        result.error or None, result.out)
            self.metrics.observe_stats(outcome.stats)
        result: dict[str, Any] | None = {"ok": outcome.ok, "ko": outcome.ko} if outcome else None
        if result is not None and op.kind == "deploy":
            result["request"] = op.request
            result["resume"] = outcome.resume
        error = workflow.error.message if workflow.error else None
        env = op.environment
        stats = outcome.stats if outcome else []

        def record(session: Any) -> None:
            if op.kind == "power-status":
                return
            db_workflows.finish_workflow(
                session, op.wid, state, node_states=node_states, result=result, error=error, user=op.user,
                environment=_env_ref(env) if op.kind == "deploy" and env else None,
                env_id=env.id if op.kind == "deploy" and env else None,
                destructive=env.destructive if op.kind == "deploy" and env else None)
            if stats and self.log_to_db:
                db_stats.add_records(session, stats)

        if stats and self.files is not None and op.kind != "power-status":  # as the DB: no rows for a status
            self.files.records(stats)  # queued: written by the file's thread, one write for all nodes
        try:
            await asyncio.shield(self.database.run(record))
        except Exception:
            log.exception("cannot record the end of %s", op.wid)
        finally:
            # only now: a client seeing `done` can read the stats and redeploy the nodes at once
            workflow.done = True
            workflow.release_run()
        if op.options.hook:
            await self._run_end_hook(workflow)

    async def _run_end_hook(self, workflow: Workflow) -> None:
        """Reference 5.10: the server's end-of-operation command, WORKFLOW_ID substituted, 20 s at most."""
        key = {"deploy": "end_of_deployment", "reboot": "end_of_reboot"}.get(workflow.op.kind, "end_of_power")
        template = self.hooks.get(key)
        if not template:
            return
        command = fill(template, quoted={"WORKFLOW_ID": workflow.wid})  # one pass, as every template
        # killed with its whole process group at the timeout, or if the server stops meanwhile
        outcome = await run_process(command, HOOK_TIMEOUT, capture=False)
        if outcome.timed_out:
            log.warning("hook %s of %s killed after %ss", key, workflow.wid, HOOK_TIMEOUT)
        else:
            log.info("hook %s of %s exited with status %s", key, workflow.wid, outcome.exit_status)

    async def cancel(self, workflow: Workflow) -> None:
        """Kill a running workflow (its runner's task is cancelled) and wait for its end to be recorded."""
        task = workflow.task
        if task is None or task.done():
            return
        workflow.log(None, 0, "The operation has been cancelled")
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), CANCEL_TIMEOUT)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass
        if not workflow.done:  # cancelled before its first step ran, or stuck: record it here
            workflow.aborted = True
            await self._record_end(workflow)

    async def delete(self, workflow: Workflow) -> None:
        """DELETE /%OP/:wid: cancel if running, then forget it (the DB row stays for history)."""
        await self.cancel(workflow)
        self.workflows.pop(workflow.wid, None)

    def running_on(self, user: str, nodes: Iterable[str]) -> list[Workflow]:
        """`user`'s running workflows that use any of `nodes`."""
        node_set = set(nodes)
        return [wf for wf in self.running() if wf.user == user and node_set & set(wf.op.hostnames)]

    async def kill_user_on_nodes(self, user: str, nodes: Iterable[str]) -> list[str]:
        """Cancel `user`'s running workflows using any of `nodes` (rights were removed)."""
        victims = self.running_on(user, nodes)
        await asyncio.gather(*(self.cancel(wf) for wf in victims))
        return [wf.wid for wf in victims]

    async def shutdown(self) -> None:
        """Cancel every running workflow (INT/TERM): they end `aborted` and release their nodes."""
        await asyncio.gather(*(self.cancel(wf) for wf in self.running()))

    def _forget_oldest_finished(self, keep: int) -> None:
        if len(self.workflows) <= keep:  # the usual case, without a walk over them
            return
        finished = [wf for wf in self.workflows.values() if wf.done]
        if len(finished) <= keep:
            return
        finished.sort(key=lambda wf: wf.end_time or 0)
        for workflow in finished[:len(finished) - keep]:
            del self.workflows[workflow.wid]
        log.info("forgot %d finished workflow(s) before autoclean: more than %d kept",
                 len(finished) - keep, keep)

    def autoclean(self, threshold_minutes: float) -> list[str]:
        """Forget finished workflows that ended more than `threshold_minutes` ago."""
        limit = time.time() - threshold_minutes * 60
        old = [wf.wid for wf in self.workflows.values() if wf.done and (wf.end_time or 0) < limit]
        for wid in old:
            del self.workflows[wid]
        return old


def _env_ref(env: ResolvedEnvironment | None) -> dict[str, Any] | None:
    return env.reference() if env is not None else None
