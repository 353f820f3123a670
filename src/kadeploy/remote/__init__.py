"""remote room: the asyncssh executor that runs commands on nodes.

Imports only `kadeploy.errors` and `kadeploy.vocabulary` (where its two modes,
flat and tree, are declared); knows nothing of the engine, PXE or SQL.
Public surface (docs/contracts.md, "remote"): `Executor`, `CommandResult`,
`RemoteProcess` (for long-lived commands such as broadcast relays), `ConnectError`,
`NodeProcess` and `Launch` (long-lived commands on many nodes, flat or through the tree:
`Executor.start_many`).
"""

from kadeploy.remote.connections import ConnectError
from kadeploy.remote.executor import Executor
from kadeploy.remote.launch import Launch
from kadeploy.remote.process import NodeProcess, RemoteProcess
from kadeploy.remote.result import CommandResult

__all__ = ["CommandResult", "ConnectError", "Executor", "Launch", "NodeProcess", "RemoteProcess"]
