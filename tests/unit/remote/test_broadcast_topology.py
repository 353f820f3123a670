"""Chain order (by name, by switch through a hierarchy) and the tree layout."""

from __future__ import annotations

import pytest

from kadeploy.broadcast.topology import chain_order, descendants, tree_children


def test_without_topology_nodes_are_in_natural_name_order():
    assert chain_order(["n-10", "n-2", "n-1"]) == ["n-1", "n-2", "n-10"]


def test_nodes_are_grouped_by_switch_and_each_uplink_is_crossed_once_each_way():
    topology = {"n-1": "sw-b", "n-2": "sw-a", "n-3": "sw-b", "n-4": "sw-a", "n-5": "core", "n-6": "sw-c"}
    parents = {"sw-a": "core", "sw-b": "core", "sw-c": "sw-a"}
    order = chain_order(list(topology) + ["n-7"], topology, parents)
    assert order == ["n-5", "n-2", "n-4", "n-6", "n-1", "n-3", "n-7"]
    # the chain enters each switch's subtree once: its nodes are contiguous
    switches = [topology.get(node) for node in order]
    for switch in {"sw-a", "sw-b", "sw-c"}:
        positions = [i for i, s in enumerate(switches) if s == switch]
        assert positions == list(range(positions[0], positions[-1] + 1))


def test_a_loop_in_the_switch_hierarchy_still_visits_every_node_once():
    topology = {"a": "s1", "b": "s2"}
    order = chain_order(["b", "a"], topology, {"s1": "s2", "s2": "s1"})
    assert sorted(order) == ["a", "b"]


def test_tree_layout_covers_every_node_once():
    layout = tree_children(10, 3)
    children = [child for kids in layout.values() for child in kids]
    assert sorted(children) == list(range(10))
    assert layout[-1] == [0, 1, 2]
    assert all(len(kids) <= 3 for kids in layout.values())


def test_descendants_are_what_a_failure_cuts_off():
    layout = tree_children(7, 2)
    assert descendants(layout, 0) == [2, 3, 6]
    assert descendants(layout, 6) == []
    chain = {i: [i + 1] if i + 1 < 5 else [] for i in range(-1, 5)}
    assert descendants(chain, 2) == [3, 4]


def test_tree_arity_must_be_positive():
    with pytest.raises(ValueError):
        tree_children(3, 0)
