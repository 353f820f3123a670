"""Identifiers users send are refused at the edge unless they are plain names."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.identifiers import (MAX_ENVIRONMENT_NAME, MAX_USER_NAME, check_environment_name, check_user_name,
                                  check_vlan_id)

ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None, database=None)
@given(value=ANY_TEXT)
def test_an_accepted_identifier_is_a_plain_bounded_name(value):
    for check, limit in ((check_user_name, MAX_USER_NAME), (check_environment_name, MAX_ENVIRONMENT_NAME),
                         (check_vlan_id, 63)):
        try:
            check(value)
        except KadeployError as exc:
            assert str(exc).startswith("Invalid")
            assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in str(exc))  # the value shown escaped
            continue
        assert 0 < len(value) <= limit
        assert value.isascii() and value.isprintable() and " " not in value
        assert "/" not in value and "\\" not in value
        assert value[0] not in "-.+"


@pytest.mark.parametrize("name", ["alice", "bob.smith", "u_1", "jdoe@EXAMPLE.ORG", "x" * MAX_USER_NAME])
def test_real_user_names_pass(name):
    assert check_user_name(name) == name


@pytest.mark.parametrize("name", ["", "-rf", ".hidden", "a/b", "..", "a b", "alice\n", "ali\u202ece", "al\u200bice",
                                  "x" * (MAX_USER_NAME + 1), "root;id", "$(id)", "al'ice"])
def test_hostile_user_names_are_refused(name):
    with pytest.raises(KadeployError) as caught:
        check_user_name(name)
    assert caught.value.code == ErrorCode.INVALID_OPTION
    assert "user name" in caught.value.message


@pytest.mark.parametrize("name", ["debian12-min", "debian11-x64-big", "my_env.v2", "alpine+k3s"])
def test_real_environment_names_pass(name):
    assert check_environment_name(name) == name


@pytest.mark.parametrize("name", ["../etc", "a/b", "deb\u202eian", "debian\n", "", "-x", "debian 12"])
def test_hostile_environment_names_are_refused_with_error_7(name):
    with pytest.raises(KadeployError) as caught:
        check_environment_name(name)
    assert caught.value.code == ErrorCode.INVALID_ENVIRONMENT


def test_a_vlan_id_with_a_trailing_newline_is_refused():
    with pytest.raises(KadeployError) as caught:
        check_vlan_id("4\n")
    assert caught.value.code == ErrorCode.INVALID_VLAN
