"""The power command table of a cluster: which command reboots or powers each node, at which level.

Built from the cluster file's `remoteops` (per-level `{name, cmd, group}`
entries, or one of our built-in drivers), `command.conf` per-node overrides and
the group files of grouped (PDU) commands. `plan()` turns a level and a set of
nodes into the invocations to run, with Kadeploy3's substitutions
(HOSTNAME_FQDN, HOSTNAME_SHORT, GROUP_FQDN, GROUP_SHORT, DEFAULT_CONNECTOR),
filled in one pass (`kadeploy.templates.fill`).

Grouped commands are broken in Kadeploy3 3.3 (the group files are registered
under a key the escalation never looks up); here a group's command runs once
when every member of the group is in the operation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kadeploy.boot.drivers import PowerDriver
from kadeploy.errors import ConfigError, ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.templates import fill

LEVELS: tuple[str, ...] = ("soft", "hard", "very_hard")
ESCALATION_KINDS: tuple[str, ...] = ("reboot", "power_on", "power_off")
SINGLE_KINDS: tuple[str, ...] = ("power_status", "console")
DEFAULT_CONNECTOR = (
    "ssh -A -l root -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
    "-o PreferredAuthentications=publickey -o BatchMode=yes"
)
# Host names are substituted into shell commands unquoted (admins' templates may
# put them inside their own quotes), so only names that need no quoting pass
# (matched whole: `$` would let a trailing newline, a command separator, through).
_SAFE_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
# the action a driver performs for each kind when the remote op does not say
DEFAULT_DRIVER_ACTIONS = {"reboot": "reset", "power_on": "on", "power_off": "off"}


@dataclass(frozen=True)
class RemoteOp:
    """One `remoteops/<kind>` entry: a level name and a command template, or a driver.

    `driver` builds the driver of a node from its hostname (the lead wires BMC
    addresses and credentials from the configuration into it); `action` is the
    driver action (`reset`, `cycle`, `on`, `off`, `soft_off`, `graceful_restart`).
    `group` is the path of a group file (lines `n1,n2,n3`).
    """

    name: str
    cmd: str | None = None
    group: str | Path | None = None
    driver: Callable[[str], PowerDriver] | None = None
    action: str | None = None


@dataclass(frozen=True)
class Invocation:
    """One command to run: for one node, or once for all members of a group."""

    nodes: tuple[str, ...]
    command: str | None = None
    driver: PowerDriver | None = None
    action: str | None = None
    bmc_key: str = ""


@dataclass
class LevelPlan:
    """What a level does: invocations to run, nodes without a command, nodes skipped with why."""

    invocations: list[Invocation] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def short_name(hostname: str) -> str:
    return hostname.split(".", 1)[0]


def check_hostname(hostname: str) -> str:
    if not _SAFE_HOSTNAME.fullmatch(hostname):
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"Invalid node name for a power command: {hostname!r}")
    return hostname


def parse_group_file(text: str, source: str = "group file") -> list[list[str]]:
    """Group file: one group per line, `n1,n2,n3`; blank lines and `#` comments ignored."""
    groups: list[list[str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        members = [member.strip() for member in line.split(",") if member.strip()]
        for member in members:
            if not _SAFE_HOSTNAME.fullmatch(member):
                raise ConfigError(f"{source}, line {lineno}: invalid node name {member!r}")
        groups.append(members)
    return groups


def substitute(
    template: str,
    hostname: str,
    *,
    group: Sequence[str] | None = None,
    default_connector: str = DEFAULT_CONNECTOR,
) -> str:
    """Replace Kadeploy3's patterns in a command template for `hostname` (and its group), in one pass.

    Names go in unquoted (checked to need no quoting); the connector is the
    administrator's command fragment, inserted as written.
    """
    check_hostname(hostname)
    members = [check_hostname(member) for member in group] if group else [hostname]
    return fill(template, raw={
        "DEFAULT_CONNECTOR": default_connector,
        "HOSTNAME_FQDN": hostname,
        "HOSTNAME_SHORT": short_name(hostname),
        "GROUP_FQDN": ",".join(members),
        "GROUP_SHORT": ",".join(short_name(member) for member in members),
    })


def node_address(template: str, hostname: str) -> str:
    """A power driver's `address` for `hostname` (HOSTNAME_FQDN, HOSTNAME_SHORT), filled in one pass."""
    check_hostname(hostname)
    return fill(template, raw={"HOSTNAME_FQDN": hostname, "HOSTNAME_SHORT": short_name(hostname)})


class CommandTable:
    """Remote ops of one cluster with their per-node overrides and groups."""

    def __init__(
        self,
        remoteops: Mapping[str, Sequence[RemoteOp]] | None = None,
        overrides: Mapping[str, Mapping[str, str]] | None = None,
        *,
        default_connector: str = DEFAULT_CONNECTOR,
        groups: Mapping[str, Sequence[Sequence[str]]] | None = None,
        levels: Sequence[str] = LEVELS,
        bmc_keys: Mapping[str, str] | None = None,
    ) -> None:
        """`groups` maps a group file path to its groups; files not given are read here."""
        self.levels = tuple(levels)
        self.default_connector = default_connector
        self.overrides = {name: dict(commands) for name, commands in (overrides or {}).items()}
        self.bmc_keys = dict(bmc_keys or {})
        self._ops: dict[tuple[str, str], RemoteOp] = {}
        self._groups: dict[str, list[list[str]]] = {str(k): [list(g) for g in v] for k, v in (groups or {}).items()}
        for kind, ops in (remoteops or {}).items():
            for op in ops:
                if op.cmd is None and op.driver is None:
                    raise ConfigError(f"remoteops/{kind}/{op.name}: neither cmd nor driver is given")
                self._ops[(kind, op.name)] = op
                if op.group is not None and str(op.group) not in self._groups:
                    self._groups[str(op.group)] = self._read_group_file(Path(op.group), kind, op.name)

    @staticmethod
    def _read_group_file(path: Path, kind: str, level: str) -> list[list[str]]:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"remoteops/{kind}/{level}/group: cannot read {path}: {exc.strerror}") from None
        return parse_group_file(text, str(path))

    # -- lookups -------------------------------------------------------------------------

    def override(self, hostname: str, key: str) -> str | None:
        """command.conf entry `key` of a node, by FQDN first, then short name."""
        for name in (hostname, short_name(hostname)):
            command = self.overrides.get(name, {}).get(key)
            if command:
                return command
        return None

    def op(self, kind: str, level: str) -> RemoteOp | None:
        return self._ops.get((kind, level))

    def has_command(self, kind: str, level: str, hostname: str) -> bool:
        return self.override(hostname, f"{kind}_{level}") is not None or self.op(kind, level) is not None

    def single(self, kind: str, hostname: str) -> Invocation | None:
        """The one command of `power_status` or `console` for a node (override first)."""
        command = self.override(hostname, kind)
        if command is not None:
            return self._node_invocation(hostname, command)
        ops = [op for (op_kind, _), op in self._ops.items() if op_kind == kind]
        if not ops:
            return None
        return self._op_invocation(ops[0], kind, (hostname,))

    # -- planning ------------------------------------------------------------------------

    def plan(self, kind: str, level: str, nodes: Sequence[str], operation: Sequence[str] | None = None) -> LevelPlan:
        """Invocations of level `level` for `nodes`; `operation` is every node of the operation.

        A grouped level runs a group's command once if all the group's members
        are in the operation (members already done at a lower level are redone
        with the group, as a PDU cycles them all); a node whose group is
        incomplete is skipped with a message and escalates.
        """
        plan = LevelPlan()
        in_operation = set(operation if operation is not None else nodes)
        op = self.op(kind, level)
        groups = self._groups.get(str(op.group), []) if op is not None and op.group is not None else []
        by_name = {}
        for hostname in in_operation:
            by_name.setdefault(hostname, hostname)
            by_name.setdefault(short_name(hostname), hostname)
        planned: set[str] = set()
        for hostname in nodes:
            if hostname in planned:
                continue
            command = self.override(hostname, f"{kind}_{level}")
            if command is not None:
                plan.invocations.append(self._node_invocation(hostname, command))
                planned.add(hostname)
                continue
            if op is None:
                plan.missing.append(hostname)
                continue
            group = self._group_of(hostname, groups)
            if group is None:
                plan.invocations.append(self._op_invocation(op, kind, (hostname,)))
                planned.add(hostname)
                continue
            members = [by_name.get(member) for member in group]
            if any(member is None for member in members):
                plan.skipped[hostname] = (
                    f"The {level} {kind} command cannot be performed since the node {hostname} belongs to "
                    f"the group [{','.join(group)}] and not all the nodes of the group are in the operation"
                )
                continue
            resolved = tuple(m for m in members if m is not None and self.override(m, f"{kind}_{level}") is None)
            plan.invocations.append(self._op_invocation(op, kind, resolved))
            planned.update(resolved)
        return plan

    @staticmethod
    def _group_of(hostname: str, groups: Sequence[Sequence[str]]) -> Sequence[str] | None:
        for group in groups:
            if hostname in group or short_name(hostname) in group:
                return group
        return None

    def _node_invocation(self, hostname: str, command: str) -> Invocation:
        text = substitute(command, hostname, default_connector=self.default_connector)
        return Invocation((hostname,), command=text, bmc_key=self.bmc_keys.get(hostname, hostname))

    def _op_invocation(self, op: RemoteOp, kind: str, members: tuple[str, ...]) -> Invocation:
        first = members[0]
        if op.driver is not None:
            driver = op.driver(first)
            action = op.action or DEFAULT_DRIVER_ACTIONS.get(kind)
            return Invocation(members, driver=driver, action=action, bmc_key=driver.bmc)
        assert op.cmd is not None
        group = members if len(members) > 1 or op.group is not None else None
        text = substitute(op.cmd, first, group=group, default_connector=self.default_connector)
        key = f"group:{fold(members)}" if len(members) > 1 else self.bmc_keys.get(first, first)
        return Invocation(members, command=text, bmc_key=key)
