"""Node and workflow states, named once (below every room: imports nothing of kadeploy).

Why one module: the same words ("ok", "brk", "deploying"...) are written by the
engine, the steps, the server and the database, and read back by clients and
`kanodes3`; a typo in one place was a state nobody else recognised. Each is a
`StrEnum`, so a member *is* its string: it is stored in the DB, sent in the
API and compared with what a client or an older row says unchanged.
The transitions the server writes (`START_STATE`, `END_STATE`) sit beside them,
as Ironic keeps its states and transitions in `ironic/common/states.py`.
"""

from __future__ import annotations

from enum import StrEnum


class NodeState(StrEnum):
    """A node inside a running workflow (engine records, the sink, `GET .../state`)."""

    WAITING = "waiting"                         # not entered in a macro-step yet
    PROCESSING = "processing"                   # inside a macro-step
    REBOOT_IN_PROGRESS = "reboot_in_progress"   # reported while a reboot or kexec is under way
    REBOOTED = "rebooted"                       # reported when `wait_reboot` reaches the node
    OK = "ok"                                   # finished successfully (also: entering a micro-step)
    KO = "ko"                                   # failed
    BRK = "brk"                                 # stopped at a breakpoint (counted as a success)
    ABORTED = "aborted"                         # the workflow was killed before the node finished
    DISCARDED = "discarded"                     # held by another operation, never worked on


#: final states Kadeploy3 counts as a success
SUCCEEDED = frozenset({NodeState.OK, NodeState.BRK})
#: final states of a failed node
FAILED = frozenset({NodeState.KO, NodeState.ABORTED})
#: states of a node the workflow has not finished with
UNFINISHED = frozenset({NodeState.WAITING, NodeState.PROCESSING})


class StepExit(StrEnum):
    """How nodes leave a macro-step instance (what the workflow routes on)."""

    OK = "OK"
    KO = "KO"
    BRK = "BRK"


class BroadcastState(StrEnum):
    """A node in one image broadcast (`broadcast/pipeline.py`): decided once, then kept."""

    PENDING = "pending"
    OK = "ok"
    KO = "ko"


class DbNodeState(StrEnum):
    """The `nodes` table's `state` column, as Kadeploy3 writes it (`kanodes3 -d` shows it)."""

    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    DEPLOY_FAILED = "deploy_failed"
    REBOOTING = "rebooting"
    REBOOTED = "rebooted"
    REBOOT_FAILED = "reboot_failed"
    POWERING = "powering"
    POWERED = "powered"
    POWER_FAILED = "power_failed"
    ABORTED = "aborted"
    DEPLOY_ENV = "deploy_env"        # rebooted into the deployment environment (kareboot3 -r deploy_env)
    RECORDED_ENV = "recorded_env"    # while rebooting into a recorded environment
    PROD_ENV = "prod_env"            # rebooted into a recorded environment


class WorkflowState(StrEnum):
    """The `workflows` table's `state` column."""

    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    ABORTED = "aborted"


FINISHED_WORKFLOW_STATES = (WorkflowState.DONE, WorkflowState.ERROR, WorkflowState.ABORTED)

#: node state written in the DB when an operation of this kind starts (reference 1.8)
START_STATE: dict[str, DbNodeState] = {"deploy": DbNodeState.DEPLOYING, "reboot": DbNodeState.REBOOTING,
                                       "power": DbNodeState.POWERING}
#: (succeeded, failed) node state written in the DB when an operation of this kind ends
END_STATE: dict[str, tuple[DbNodeState, DbNodeState]] = {
    "deploy": (DbNodeState.DEPLOYED, DbNodeState.DEPLOY_FAILED),
    "reboot": (DbNodeState.REBOOTED, DbNodeState.REBOOT_FAILED),
    "power": (DbNodeState.POWERED, DbNodeState.POWER_FAILED),
}
