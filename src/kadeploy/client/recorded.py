"""Recorded environments as a client launches them: lookup and the local files to serve.

Client room; imports only the client room. Kadeploy3's kadeploy3 and
kareboot3 (`prepare` in bin/kadeploy3 and bin/kareboot3 of 3.3.11) do not send
a recorded environment's name and leave the rest to the server: they fetch
its description (`GET /environments?last&username&name&version`), send the
exact owner, name and version found, and serve through the client's file
server every file of the description that is a path on this machine (image,
preinstall, postinstalls: `add_localfiles`), exactly as for `-a`. The server
grabs those files from the client, and checks them against the checksums it
stored when the environment was added (for a client file, the ETag the
client's file server gives it), so a recorded environment whose files stay on
the user's frontend deploys by name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from kadeploy.client.errors import ClientError
from kadeploy.client.export import is_local_file, local_path
from kadeploy.client.http import Connection
from kadeploy.client.session import Session

if TYPE_CHECKING:
    from kadeploy.client.run import WorkflowRequest

# What kadeploy3 prints (with `debug`, on stdout) when a recorded environment made of
# local files is deployed by another server than the default one, or by several
# (bin/kadeploy3, `prepare`); "muli" is Kadeploy3's spelling, kept for scripts.
WARNING_REMOTE_SERVER = "Warning: deploying a recorded environment that depends on locally stored files on a remote server"
WARNING_MULTI_SERVER = "Warning: deploying a recorded environment that depends on locally stored files on muli servers"

# Which of several environments of the same name a tool takes when no owner is named:
# kadeploy3 prefers the user's own ones, kareboot3 takes the first the server lists.
PREFERS_OWN_ENVIRONMENT = {"Deployment": True, "Reboot": False}


def environment_file_references(env: Mapping[str, Any]) -> list[str]:
    """The file references of a description: image, preinstall archive, postinstall archives (in that order)."""
    references: list[Any] = []
    image = env.get("image")
    if isinstance(image, Mapping):
        references.append(image.get("file"))
    preinstall = env.get("preinstall")
    if isinstance(preinstall, Mapping):
        references.append(preinstall.get("archive") or preinstall.get("file"))
    for postinstall in env.get("postinstalls") or []:
        if isinstance(postinstall, Mapping):
            references.append(postinstall.get("archive") or postinstall.get("file"))
    return [str(reference) for reference in references if isinstance(reference, str) and reference]


def local_environment_files(env: Mapping[str, Any]) -> list[str]:
    """Absolute paths of the files of `env` that live on this machine (plain paths and `local://`).

    An unreadable one is refused as Kadeploy3's `add_localfiles` refuses it:
    the server could not grab it, so there is no point launching anything.
    """
    paths: list[str] = []
    for reference in environment_file_references(env):
        if not is_local_file(reference):
            continue
        path = local_path(reference)
        if not path.exists() or not os.access(path, os.R_OK):
            raise ClientError(f"Cannot read file '{path}'")
        paths.append(str(path))
    return list(dict.fromkeys(paths))


def find_recorded_environment(connection: Connection, name: str, *, user: str | None = None,
                              version: int | None = None, prefer_own: bool = True) -> dict[str, Any]:
    """The description of the recorded environment a tool names, as Kadeploy3's client picks it.

    Without a version, the last one; without an owner, the caller's own
    environment if there is one (kadeploy3), else the first listed.
    """
    query: dict[str, Any] = {"name": name}
    if user:
        query["username"] = user
    if version is None:
        query["last"] = True
    else:
        query["version"] = version
    answer = connection.get("/environments", query)
    environments = [env for env in answer or [] if isinstance(env, dict)] if isinstance(answer, list) else []
    if not environments:
        raise ClientError(f"The environment '{name}' does not exist")
    if prefer_own and not user:
        own = [env for env in environments if env.get("user") == connection.user]
        environments = own or environments
    return environments[0]


def resolve_recorded_environment(session: Session, request: WorkflowRequest, stdout: TextIO) -> WorkflowRequest:
    """`request` with its recorded environment pinned (owner, name, version) and its local files to serve.

    A request naming no recorded environment (an anonymous one, `--resume`, a power operation) is
    returned as it is. The environment is looked up on the chosen server (the
    default one with `-M`), as Kadeploy3 does.
    """
    wanted = request.params.get("environment")
    if not isinstance(wanted, Mapping) or wanted.get("kind", "database") != "database" or not wanted.get("name"):
        return request
    version = wanted.get("version")
    env = find_recorded_environment(
        _lookup_connection(session), str(wanted["name"]), user=wanted.get("user") or None,
        version=int(version) if version is not None else None,
        prefer_own=PREFERS_OWN_ENVIRONMENT.get(request.operation, True))
    pinned = dict(wanted)
    pinned.update(user=env.get("user"), name=env.get("name"), version=env.get("version"))
    local_files = local_environment_files(env)
    if local_files and request.operation == "Deployment":
        for warning in _warnings(session):
            stdout.write(warning + "\n")
        stdout.flush()
    return dataclasses.replace(
        request,
        params={**request.params, "environment": pinned},
        local_files=list(dict.fromkeys([*request.local_files, *local_files])),
    )


def _lookup_connection(session: Session) -> Connection:
    """The chosen server's connection (`-S`, else the default one), even with `-M`."""
    chosen = session.config.server(session.options.server).name
    for connection in session.connections:
        if connection.server.name == chosen:
            return connection
    return session.primary


def _warnings(session: Session) -> list[str]:
    warnings = []
    chosen = session.options.server
    if chosen and chosen not in ("default", session.config.default):
        warnings.append(WARNING_REMOTE_SERVER)
    if session.multi:
        warnings.append(WARNING_MULTI_SERVER)
    return warnings
