"""VLAN names and their resolution (`kadeploy.vlan`), with a resolver given by the test.

The resolver stands in for the site's DNS: no test here sends a query anywhere.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.vlan import check_vlan_id, resolve_vlan_addresses, vlan_hostname


def test_suffix_goes_after_the_short_name_with_the_vlan_substituted() -> None:
    assert vlan_hostname("graphene-1.nancy.grid5000.fr", "-kavlan-VLAN_ID", "4") == \
        "graphene-1-kavlan-4.nancy.grid5000.fr"


def test_vlan_id_is_substituted_in_the_domain_too() -> None:
    assert vlan_hostname("node-1.c1.testbed", "-v.VLAN_ID", "12") == "node-1-v.12.c1.testbed"


def test_every_vlan_id_placeholder_is_replaced() -> None:
    assert vlan_hostname("n-3.site", "-VLAN_ID-VLAN_ID", "7") == "n-3-7-7.site"


def test_a_hostname_without_domain_gets_only_the_suffix() -> None:
    assert vlan_hostname("node-7", "-kavlan-VLAN_ID", "100") == "node-7-kavlan-100"


@pytest.mark.parametrize("vlan", ["", "1 2", "4;reboot", "../x", "-5", "a" * 64])
def test_a_vlan_id_that_cannot_name_a_vlan_is_refused(vlan: str) -> None:
    with pytest.raises(KadeployError) as info:
        check_vlan_id(vlan)
    assert info.value.code == ErrorCode.INVALID_VLAN


@pytest.mark.parametrize("vlan", ["4", "100", "kavlan-3"])
def test_vlan_ids_are_accepted(vlan: str) -> None:
    assert check_vlan_id(vlan) == vlan


def fake_dns(table: dict[str, list[str]], *, asked: list[str] | None = None, hang: set[str] = frozenset()):
    """A getaddrinfo over `table` (name -> addresses, IPv6 ones included as a resolver returns them)."""

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if asked is not None:
            asked.append(host)
        if host in hang:
            await asyncio.sleep(3600)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, 0)) for a in table[host]]

    return getaddrinfo


async def test_each_node_gets_the_address_of_its_vlan_name() -> None:
    asked: list[str] = []
    dns = fake_dns({"node-1-kavlan-100.c1.testbed": ["10.200.129.1"],
                    "node-2-kavlan-100.c1.testbed": ["10.200.129.2"]}, asked=asked)
    addresses = await resolve_vlan_addresses(["node-1.c1.testbed", "node-2.c1.testbed"], "-kavlan-VLAN_ID", "100",
                                             resolver=dns)
    assert addresses == {"node-1.c1.testbed": "10.200.129.1", "node-2.c1.testbed": "10.200.129.2"}
    assert sorted(asked) == ["node-1-kavlan-100.c1.testbed", "node-2-kavlan-100.c1.testbed"]


async def test_the_ipv4_address_is_kept_since_pxe_profiles_are_named_after_it() -> None:
    dns = fake_dns({"n-1-v-5.site": ["fd00::1", "192.0.2.10"]})
    assert await resolve_vlan_addresses(["n-1.site"], "-v-VLAN_ID", "5", resolver=dns) == {"n-1.site": "192.0.2.10"}


async def test_a_name_that_does_not_resolve_refuses_the_vlan_and_is_named() -> None:
    dns = fake_dns({"node-1-kavlan-100.c1.testbed": ["10.200.129.1"]})
    with pytest.raises(KadeployError) as info:
        await resolve_vlan_addresses(["node-1.c1.testbed", "node-2.c1.testbed"], "-kavlan-VLAN_ID", "100",
                                     resolver=dns)
    assert info.value.code == ErrorCode.INVALID_VLAN
    assert "node-2-kavlan-100.c1.testbed" in info.value.message
    assert "node-1-kavlan" not in info.value.message
    assert "-kavlan-VLAN_ID" in info.value.message


async def test_a_name_with_only_an_ipv6_address_is_refused() -> None:
    dns = fake_dns({"n-1-v-5.site": ["fd00::1"]})
    with pytest.raises(KadeployError, match="no IPv4 address for n-1-v-5.site"):
        await resolve_vlan_addresses(["n-1.site"], "-v-VLAN_ID", "5", resolver=dns)


async def test_a_resolver_that_does_not_answer_is_given_up_on() -> None:
    dns = fake_dns({"a-v-5.site": ["192.0.2.1"]}, hang={"b-v-5.site"})
    with pytest.raises(KadeployError) as info:
        await resolve_vlan_addresses(["a.site", "b.site"], "-v-VLAN_ID", "5", resolver=dns, timeout=0.2)
    assert info.value.code == ErrorCode.INVALID_VLAN
    assert "b-v-5.site (no answer within 0.2s)" in info.value.message


async def test_an_invalid_vlan_id_is_refused_before_any_lookup() -> None:
    asked: list[str] = []
    with pytest.raises(KadeployError):
        await resolve_vlan_addresses(["n-1.site"], "-v-VLAN_ID", "5 6", resolver=fake_dns({}, asked=asked))
    assert asked == []
