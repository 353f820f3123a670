"""Custom operations of a request (`--custom-steps`, API `custom_operations`, reference 5.9).

Room `steps`. The request names macro-steps by implementation
(`BroadcastEnvKascade`) or by interface (`BroadcastEnv`), then micro-steps,
each with `pre-ops`, `post-ops` and/or `substitute` lists. As in Kadeploy3,
operations for an implementation this deployment does not use are checked
and ignored. They are added to
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
from kadeploy.steps.macrosteps import DEPLOY_INTERFACES, MACROSTEPS
from kadeploy.vocabulary import REGISTRIES, Kind, UnknownName, UnsupportedName

MICROSTEPS = REGISTRIES[Kind.MICROSTEP]

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


def _check_names(macro: Any, micros: Any, interfaces: set[str]) -> None:
    """Kadeploy3's checks (paramsparser.rb `:custom_ops`) of one entry, whether this deployment uses it or not.

    A macro-step interface or implementation, known micro-steps, valid
    operations. An implementation this deployment does not use passes and is
    then ignored, as in Kadeploy3; a name we do not provide is refused with
    the vocabulary's words.
    """
    if not isinstance(macro, str):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, "custom_operations: Macrostep name must be a String")
    if macro not in interfaces:
        try:
            MACROSTEPS.get(macro)
        except UnsupportedName as exc:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations: {exc}") from None
        except UnknownName:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations: Invalid macrostep '{macro}'") from None
    if not isinstance(micros, dict):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations/{macro}: a mapping of "
                                                        "micro-steps is expected")
    for micro, conf in micros.items():
        try:
            MICROSTEPS.check(micro)
        except UnsupportedName as exc:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations/{macro}: {exc}") from None
        except UnknownName:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"custom_operations/{macro}: Invalid microstep '{micro}'") from None
        if not isinstance(conf, dict):
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom_operations/{macro}/{micro}: a mapping is expected")
        _merged(None, conf, f"custom_operations/{macro}/{micro}")


def apply_custom_operations(macrosteps: list[tuple[str, list[ImplementationSpec]]],
                            raw: Any) -> list[tuple[str, list[ImplementationSpec]]]:
    """The macro-steps with the request's custom operations merged into their micro-step settings."""
    if raw is None:
        return macrosteps
    if not isinstance(raw, dict):
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, "custom_operations: a mapping of macro-steps is expected")
    if not raw:
        return macrosteps
    interfaces = set(DEPLOY_INTERFACES) | {interface for interface, _ in macrosteps}
    for macro, micros in raw.items():
        _check_names(macro, micros, interfaces)
    result = []
    for interface, specs in macrosteps:
        updated = []
        for spec in specs:
            microsteps = dict(spec.microsteps)
            for macro in (interface, spec.name):
                micros = raw.get(macro)
                if micros is None:
                    continue
                for micro, conf in micros.items():
                    microsteps[micro] = _merged(microsteps.get(micro), conf, f"custom_operations/{macro}/{micro}")
            updated.append(replace(spec, microsteps=microsteps) if microsteps != spec.microsteps else spec)
        result.append((interface, updated))
    return result
