"""The operations room: what passes between the server and the steps.

The server (above) validates requests into typed `Operation`s whose
`options` are a `DeployRequest`, `RebootRequest` or `PowerRequest` (with the
environment already resolved: `kadeploy.catalog.resolved.ResolvedEnvironment`),
and opens consoles with a `ConsoleRequest`; the steps (beside it) run them as
an `OperationRunner`. Neither imports the other: the daemon
(`server/daemon.py`), the composition root, builds the runner with
`kadeploy.steps.runner.create_services` and hands the server the `Services`.

Imports `catalog`, `config` and `states` only.
"""

from kadeploy.operations.model import (
    WID_PREFIX,
    ConsoleFactory,
    ConsoleSession,
    NodeOutcome,
    NodeVerdict,
    Operation,
    OperationKind,
    OperationOutcome,
    OperationRunner,
    Services,
    WorkflowSink,
)
from kadeploy.operations.requests import (
    LEVELS,
    REBOOT_KINDS,
    ConsoleRequest,
    DeployRequest,
    Level,
    PowerRequest,
    PxeRequest,
    RebootKind,
    RebootRequest,
    ResumeFrom,
    WorkflowRequest,
)

__all__ = [
    "LEVELS", "REBOOT_KINDS", "WID_PREFIX", "ConsoleFactory", "ConsoleRequest", "ConsoleSession", "DeployRequest",
    "Level", "NodeOutcome", "NodeVerdict", "Operation", "OperationKind", "OperationOutcome", "OperationRunner",
    "PowerRequest", "PxeRequest", "RebootKind", "RebootRequest", "ResumeFrom", "Services", "WorkflowRequest",
    "WorkflowSink",
]
