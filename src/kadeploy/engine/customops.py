"""Custom operations from a request (`--custom-steps`, API `custom_operations`), reference 5.9.

`parse_custom_operations` validates the YAML/JSON mapping
`{Macro: {micro: {override, substitute, pre-ops, post-ops}}}`;
`apply_custom_operations` merges it into a workflow's macro-steps: a request's
operations are added after the admin's (cluster file) ones, or replace them
when `override: true`. `Macro` is an interface (all its implementations) or an
implementation name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kadeploy.engine.model import CustomOperation, ImplementationSpec, MacroStepSpec, MicroStepConf
from kadeploy.errors import ErrorCode, KadeployError

_TARGETS = {"pre-ops": "pre_ops", "post-ops": "post_ops", "substitute": "substitute"}
_OP_KEYS = {"action", "name", "command", "file", "destination", "params", "timeout", "retries", "scattering",
            "filename"}


@dataclass(frozen=True)
class MicroCustomOps:
    """The custom operations a request attaches to one micro-step."""

    pre_ops: tuple[CustomOperation, ...] = ()
    post_ops: tuple[CustomOperation, ...] = ()
    substitute: tuple[CustomOperation, ...] | None = None
    override: bool = False


CustomOperations = dict[str, dict[str, MicroCustomOps]]


def _error(source: str, path: str, message: str) -> KadeployError:
    return KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{source}: {path}: {message}")


def _parse_op(raw: Any, source: str, path: str) -> CustomOperation:
    if not isinstance(raw, Mapping):
        raise _error(source, path, "an operation must be a mapping with an 'action'")
    unknown = set(raw) - _OP_KEYS
    if unknown:
        raise _error(source, path, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    action = raw.get("action")
    try:
        return CustomOperation(
            action=action, name=str(raw.get("name") or action),
            command=raw.get("command"), file=raw.get("file"), destination=raw.get("destination"),
            params=None if raw.get("params") is None else str(raw.get("params")),
            timeout=float(raw.get("timeout") or 0), retries=int(raw.get("retries") or 0),
            scattering=raw.get("scattering") or "tree")
    except (TypeError, ValueError) as exc:
        raise _error(source, path, f"timeout and retries must be numbers ({exc})") from None
    except KadeployError as exc:
        raise _error(source, path, exc.message) from None


def parse_custom_operations(data: Any, source: str = "custom operations") -> CustomOperations:
    """Validate a custom-operations mapping; errors name the source and the key path."""
    if not isinstance(data, Mapping):
        raise _error(source, "/", "expected a mapping of macro-steps")
    parsed: CustomOperations = {}
    for macro, micros in data.items():
        if not isinstance(micros, Mapping):
            raise _error(source, f"{macro}", "expected a mapping of micro-steps")
        for micro, entry in micros.items():
            path = f"{macro}/{micro}"
            if not isinstance(entry, Mapping):
                raise _error(source, path, "expected a mapping with pre-ops, post-ops, substitute or override")
            unknown = set(entry) - set(_TARGETS) - {"override"}
            if unknown:
                raise _error(source, path, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            lists: dict[str, tuple[CustomOperation, ...]] = {}
            for key, field_name in _TARGETS.items():
                if key in entry:
                    ops = entry[key]
                    if not isinstance(ops, list):
                        raise _error(source, f"{path}/{key}", "expected a list of operations")
                    lists[field_name] = tuple(_parse_op(op, source, f"{path}/{key}[{i}]") for i, op in enumerate(ops))
            parsed.setdefault(str(macro), {})[str(micro)] = MicroCustomOps(
                pre_ops=lists.get("pre_ops", ()), post_ops=lists.get("post_ops", ()),
                substitute=lists.get("substitute"), override=bool(entry.get("override", False)))
    return parsed


def _merge(conf: MicroStepConf, ops: MicroCustomOps) -> MicroStepConf:
    def combine(admin: tuple[CustomOperation, ...] | None, user: tuple[CustomOperation, ...] | None):
        if user is None:
            return admin
        return user if ops.override or not admin else (*admin, *user)

    return dataclasses.replace(
        conf,
        pre_ops=combine(conf.pre_ops, ops.pre_ops or None) or (),
        post_ops=combine(conf.post_ops, ops.post_ops or None) or (),
        substitute=combine(conf.substitute, ops.substitute))


def apply_custom_operations(macrosteps: list[MacroStepSpec], operations: CustomOperations) -> list[MacroStepSpec]:
    """New macro-steps with the request's custom operations merged into each matching implementation."""
    merged: list[MacroStepSpec] = []
    for interface, impls in macrosteps:
        new_impls: list[ImplementationSpec] = []
        for impl in impls:
            microsteps = dict(impl.microsteps)
            for macro, micros in operations.items():
                if macro not in (interface, impl.name):
                    continue
                for micro, ops in micros.items():
                    microsteps[micro] = _merge(microsteps.get(micro, MicroStepConf()), ops)
            new_impls.append(dataclasses.replace(impl, microsteps=microsteps))
        merged.append((interface, new_impls))
    return merged
