"""Custom operations of a request (`--custom-steps`, API `custom_operations`, reference 5.9).

Room `steps`. The request names macro-steps by implementation
(`BroadcastEnvKascade`) or by interface (`BroadcastEnv`), then micro-steps,
each with `pre-ops`, `post-ops` and/or `substitute` lists. They are added to
the operations the cluster file already defines for that micro-step, or
replace them with `override: true`. Parsed with the cluster file's model, so
that a user's file is checked exactly as an administrator's; a mistake is an
INVALID_CUSTOMOP error naming the entry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from kadeploy.config.automata import CustomOperation as ConfCustomOperation
from kadeploy.engine import ImplementationSpec, MicroStepConf
from kadeploy.engine.model import CustomOperation
from kadeploy.errors import ErrorCode, KadeployError

_KINDS = {"pre-ops": "pre_ops", "post-ops": "post_ops", "substitute": "substitute"}


def _operation(raw: Any, where: str) -> CustomOperation:
    if not isinstance(raw, dict):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}: an operation must be a mapping")
    try:
        conf = ConfCustomOperation.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'operation'}: {e['msg']}" for e in exc.errors())
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}: {detail}") from None
    return CustomOperation(conf.action, conf.label, command=conf.command, file=conf.file,
                           destination=conf.destination, params=conf.params or None, timeout=float(conf.timeout),
                           retries=conf.retries, scattering=conf.scattering)


def _merged(current: MicroStepConf | None, raw: dict[str, Any], where: str) -> MicroStepConf:
    conf = current or MicroStepConf()
    override = bool(raw.get("override"))
    changes: dict[str, Any] = {}
    for key, attribute in _KINDS.items():
        ops = raw.get(key)
        if ops is None:
            continue
        if not isinstance(ops, list):
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}/{key}: a list of operations is expected")
        parsed = tuple(_operation(op, f"{where}/{key}[{index}]") for index, op in enumerate(ops))
        existing = getattr(conf, attribute) or ()
        changes[attribute] = parsed if override else tuple(existing) + parsed
    unknown = set(raw) - set(_KINDS) - {"override"}
    if unknown:
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (pre-ops, post-ops, substitute, "
                            "override)")
    return replace(conf, **changes)


def apply_custom_operations(macrosteps: list[tuple[str, list[ImplementationSpec]]],
                            raw: Any) -> list[tuple[str, list[ImplementationSpec]]]:
    """The macro-steps with the request's custom operations merged into their micro-step settings."""
    if not raw:
        return macrosteps
    if not isinstance(raw, dict):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, "custom_operations: a mapping of macro-steps is expected")
    known = {interface for interface, _ in macrosteps} | {spec.name for _, specs in macrosteps for spec in specs}
    for macro in raw:
        if macro not in known:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"custom_operations: {macro} is not a macro-step of this deployment "
                                f"(one of {', '.join(sorted(known))})")
    result = []
    for interface, specs in macrosteps:
        updated = []
        for spec in specs:
            microsteps = dict(spec.microsteps)
            for macro in (interface, spec.name):
                micros = raw.get(macro)
                if micros is None:
                    continue
                if not isinstance(micros, dict):
                    raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations/{macro}: a mapping of "
                                                                    "micro-steps is expected")
                for micro, conf in micros.items():
                    if not isinstance(conf, dict):
                        raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                            f"custom_operations/{macro}/{micro}: a mapping is expected")
                    microsteps[micro] = _merged(microsteps.get(micro), conf, f"custom_operations/{macro}/{micro}")
            updated.append(replace(spec, microsteps=microsteps) if microsteps != spec.microsteps else spec)
        result.append((interface, updated))
    return result
