"""The vocabulary holds together: every name we accept leads to code, every Kadeploy3 name is done or refused."""

from __future__ import annotations

import inspect
import typing

import pytest

from kadeploy.catalog.environment import ImageSpec
from kadeploy.steps.deploy import MICROSTEPS
from kadeploy.steps.macrosteps import POWER_OPERATIONS, REBOOT_KINDS, deploy_implementation
from kadeploy.vocabulary import KADEPLOY3_NAMES, REGISTRIES, Kind, UnknownName, UnsupportedName

ALL_KADEPLOY3_NAMES = [(kind, name) for kind, names in KADEPLOY3_NAMES.items() for name in sorted(names)]


def test_every_kind_has_declarations():
    for kind in Kind:
        assert REGISTRIES[kind].names(), kind


def test_every_declared_macrostep_lists_only_declared_microsteps():
    implementations = [deploy_implementation(name) for name in REGISTRIES[Kind.MACROSTEP]]
    implementations += [*REBOOT_KINDS.values(), *POWER_OPERATIONS.values()]
    for implementation in implementations:
        assert implementation.microsteps, implementation.name
        for micro in implementation.microsteps:
            assert micro in MICROSTEPS, f"{implementation.name} lists the undeclared micro-step {micro}"


def test_every_microstep_is_a_coroutine_function():
    for declaration in MICROSTEPS.declarations():
        assert inspect.iscoroutinefunction(declaration.value), declaration.name


def test_broadcasts_name_declared_methods_and_only_broadcasts_send_the_environment():
    for name in REGISTRIES[Kind.MACROSTEP]:
        implementation = deploy_implementation(name)
        sends = "send_environment" in implementation.microsteps
        assert sends == (implementation.broadcast is not None), name
        if sends:
            assert implementation.interface == "BroadcastEnv"
            assert implementation.broadcast in REGISTRIES[Kind.BROADCAST], name


@pytest.mark.parametrize(("kind", "name"), ALL_KADEPLOY3_NAMES, ids=[f"{k.name}:{n}" for k, n in ALL_KADEPLOY3_NAMES])
def test_each_kadeploy3_name_is_provided_or_refused_as_not_supported(kind: Kind, name: str):
    registry = REGISTRIES[kind]
    if name in registry:
        assert registry.get(name) is not None
        return
    with pytest.raises(UnsupportedName) as error:
        registry.get(name)
    assert f'"{name}" is not supported by this Kadeploy (supported: ' in str(error.value)


def test_names_kadeploy3_has_and_we_do_not_are_exactly_the_known_gaps():
    missing = {(kind, name) for kind, name in ALL_KADEPLOY3_NAMES if name not in REGISTRIES[kind]}
    assert missing == {(Kind.MACROSTEP, "SetDeploymentEnvNfsroot"), (Kind.MICROSTEP, "load_drivers"),
                       # Kadeploy3's kastafior binary: BroadcastEnvKastafior runs our chain, and says so
                       (Kind.BROADCAST, "kastafior")}
    assert deploy_implementation("BroadcastEnvKastafior").broadcast == "chain"


def test_an_unknown_name_is_unknown_not_unsupported():
    with pytest.raises(UnknownName, match=r'unknown macro-step implementation "BroadcastEnvCarrierPigeon"'):
        REGISTRIES[Kind.MACROSTEP].get("BroadcastEnvCarrierPigeon")


def test_a_name_cannot_be_declared_twice():
    registry = REGISTRIES[Kind.PXE_METHOD]
    with pytest.raises(RuntimeError, match="declared twice"):
        registry.declare("PXElinux", object())


def test_image_kinds_of_the_environment_model_are_the_declared_ones():
    kind_field = ImageSpec.model_fields["kind"].annotation
    assert set(typing.get_args(kind_field)) == set(REGISTRIES[Kind.IMAGE_KIND].names())
