"""KADEPLOY_TREE_FROM: where the executor's tree starts (benchmarks compare both modes at one size)."""

from __future__ import annotations

import pytest

from kadeploy.remote.tree import TREE_CROSSING, tree_from_environment


def test_unset_or_empty_is_the_crossing_and_a_count_moves_it():
    assert tree_from_environment({}) == TREE_CROSSING
    assert tree_from_environment({"KADEPLOY_TREE_FROM": ""}) == TREE_CROSSING
    assert tree_from_environment({"KADEPLOY_TREE_FROM": "2"}) == 2


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_anything_but_a_positive_count_is_refused_by_name(value):
    with pytest.raises(ValueError, match="KADEPLOY_TREE_FROM must be a node count of at least 1"):
        tree_from_environment({"KADEPLOY_TREE_FROM": value})
