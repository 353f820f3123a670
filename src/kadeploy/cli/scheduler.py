"""Batch scheduler hooks: give a job's user the rights on the job's nodes, and take them back (CLI room).

Reference section 9: on Grid'5000, OAR "deploy" jobs call `karights3 -a` in
their prologue and `karights3 -d` in their epilogue. The scripts in
`scripts/scheduler/` (`oar-prologue`, `oar-epilogue`, `slurm-prolog`,
`slurm-epilog`) call `python3 -m kadeploy.cli.scheduler <hook>`; this module
reads what the scheduler provides, then runs karights3 (in-process, with the
client configuration of the machine, as the administrator):

* OAR: the user from `$OAR_JOB_USER`, `$OAR_USER` or the 2nd argument; the
  node file from `$OAR_NODEFILE`, `$OAR_FILE_NODES`, `$OAR_NODE_FILE` or the
  3rd argument (OAR calls server prologues with `job_id user node_file`);
* Slurm: `$SLURM_JOB_USER` and `$SLURM_JOB_NODELIST` (expanded with
  `scontrol show hostnames` when available, else with Kadeploy's own NodeSet
  syntax, which is Slurm's).

`KADEPLOY_NODE_SUFFIX` (e.g. `.lyon.grid5000.fr`) is appended to short node
names; `KADEPLOY_ADMIN_USER` (default: the user running the hook, normally
root) is the almighty user karights3 speaks as. The prologue overwrites other
users' rights on the nodes (`-o`): the scheduler gave the nodes to this job.
The epilogue's revocation also stops the user's deployments still running on
those nodes (the server does that); rights already gone are not an error.
A hook exits non-zero only when the rights could not be set, so that the
scheduler can refuse to start the job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import expand, parse_node_file

HOOKS = ("oar-prologue", "oar-epilogue", "slurm-prolog", "slurm-epilog")
_USER = re.compile(r"^[A-Za-z0-9._-]+$")
SCONTROL_TIMEOUT = 30.0


class HookError(Exception):
    """What the scheduler did not provide, or what karights3 refused."""


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def oar_job(env: Mapping[str, str], args: Sequence[str]) -> tuple[str, list[str]]:
    """(user, nodes) of an OAR job, from its environment or the prologue arguments."""
    user = _first(env, "OAR_JOB_USER", "OAR_USER") or (args[1] if len(args) > 1 else None)
    node_file = _first(env, "OAR_NODEFILE", "OAR_FILE_NODES", "OAR_NODE_FILE") or (args[2] if len(args) > 2 else None)
    if not user:
        raise HookError("OAR did not give the job's user (OAR_JOB_USER, OAR_USER or the 2nd argument)")
    if not node_file:
        raise HookError("OAR did not give the job's node file (OAR_NODEFILE, OAR_FILE_NODES or the 3rd argument)")
    try:
        text = Path(node_file).read_text()
    except OSError as exc:
        raise HookError(f"Cannot read the OAR node file {node_file}: {exc.strerror}") from None
    try:
        nodes = parse_node_file(text, node_file)  # one line per core in OAR files: duplicates go
    except KadeployError as exc:
        raise HookError(exc.message) from None
    return user, nodes


def slurm_job(env: Mapping[str, str]) -> tuple[str, list[str]]:
    """(user, nodes) of a Slurm job from SLURM_JOB_USER and SLURM_JOB_NODELIST."""
    user = env.get("SLURM_JOB_USER")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not user:
        raise HookError("Slurm did not give the job's user (SLURM_JOB_USER)")
    if not nodelist:
        raise HookError("Slurm did not give the job's nodes (SLURM_JOB_NODELIST)")
    return user, expand_slurm_nodelist(nodelist)


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """`node[1-3,7]` -> names, with `scontrol show hostnames` if Slurm is installed here."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            done = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                  timeout=SCONTROL_TIMEOUT, check=False)
            if done.returncode == 0 and done.stdout.split():
                return done.stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            pass  # fall back on our own parser, which reads the same syntax
    try:
        return expand(nodelist)
    except KadeployError as exc:
        raise HookError(f"Invalid SLURM_JOB_NODELIST {nodelist!r}: {exc.message}") from None


def qualify(nodes: Sequence[str], suffix: str) -> list[str]:
    """Append the site's domain to short names (Slurm and OAR often use them)."""
    if not suffix:
        return list(nodes)
    dotted = suffix if suffix.startswith(".") else "." + suffix
    return [node if "." in node else node + dotted for node in nodes]


def karights3_argv(grant: bool, user: str, nodes: Sequence[str]) -> list[str]:
    """The karights3 command line of a hook."""
    if not _USER.match(user):
        raise HookError(f"Refusing the user name {user!r}")
    argv = ["-a", "-o", "-p", "*"] if grant else ["-d"]
    argv += ["-u", user]
    for node in nodes:
        argv += ["-m", node]
    return argv


def run_hook(hook: str, args: Sequence[str], env: Mapping[str, str]) -> int:
    """Run one hook; returns the exit status for the scheduler."""
    from kadeploy.cli import karights3

    if hook not in HOOKS:
        print(f"kadeploy scheduler hook: unknown hook {hook!r} (one of {', '.join(HOOKS)})", file=sys.stderr)
        return 2
    grant = hook in ("oar-prologue", "slurm-prolog")
    try:
        user, nodes = oar_job(env, args) if hook.startswith("oar") else slurm_job(env)
        nodes = qualify(nodes, env.get("KADEPLOY_NODE_SUFFIX", ""))
        argv = karights3_argv(grant, user, nodes)
    except HookError as exc:
        print(f"kadeploy {hook}: {exc}", file=sys.stderr)
        return 1
    admin = env.get("KADEPLOY_ADMIN_USER")
    if admin:
        os.environ["USER"] = admin
    status = karights3.main(argv)
    if not grant and status == _exit_of(ErrorCode.NOTHING_MODIFIED):
        return 0  # rights already revoked (by hand, or a prologue that failed): the job can end
    if status == 0:
        what = "granted to" if grant else "revoked from"
        print(f"kadeploy {hook}: rights on {len(nodes)} node(s) {what} {user}")
    return status


def _exit_of(code: ErrorCode) -> int:
    from kadeploy.client.errors import exit_status_of

    return exit_status_of(KadeployError(code, ""))


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m kadeploy.cli.scheduler HOOK [scheduler arguments...]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(f"usage: python3 -m kadeploy.cli.scheduler {{{','.join(HOOKS)}}} [arguments...]", file=sys.stderr)
        return 2
    return run_hook(args[0], args[1:], os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
