"""Where each node sits in the broadcast: chain order and tree layout.

Pure functions. The chain visits nodes switch by switch, depth first through
the switch hierarchy, so that every uplink is crossed once downward and once
upward; without topology, nodes are in natural name order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from kadeploy.nodeset import sort_key


def chain_order(hostnames: Sequence[str], topology: Mapping[str, str] | None = None,
                switch_parents: Mapping[str, str] | None = None) -> list[str]:
    """Order nodes for a chain: grouped by switch, switches depth-first from the root(s).

    `topology` maps hostname -> switch; `switch_parents` maps switch -> parent
    switch (absent for a root). Nodes of a switch come before the switches
    below it, so a subtree is entered once and left once. Nodes without a
    known switch come last, by name.
    """
    if not topology:
        return sorted(hostnames, key=sort_key)
    parents = dict(switch_parents or {})
    by_switch: dict[str, list[str]] = defaultdict(list)
    unplaced: list[str] = []
    for hostname in hostnames:
        switch = topology.get(hostname)
        if switch is None:
            unplaced.append(hostname)
        else:
            by_switch[switch].append(hostname)
    children: dict[str | None, list[str]] = defaultdict(list)
    known = set(by_switch) | set(parents) | set(parents.values())
    for switch in known:
        parent = parents.get(switch)
        if parent == switch:
            parent = None
        children[parent].append(switch)
    order: list[str] = []
    visited: set[str] = set()

    def visit(switch: str) -> None:
        if switch in visited:  # a loop in the hierarchy: visit each switch once
            return
        visited.add(switch)
        order.extend(sorted(by_switch.get(switch, []), key=sort_key))
        for child in sorted(children.get(switch, []), key=sort_key):
            visit(child)

    for root in sorted(children.get(None, []), key=sort_key):
        visit(root)
    for switch in sorted(known - visited, key=sort_key):  # switches whose loop has no root
        visit(switch)
    order.extend(sorted(unplaced, key=sort_key))
    return order


def tree_children(count: int, arity: int) -> dict[int, list[int]]:
    """Heap layout of a k-ary tree: index -1 is the server, 0..count-1 the nodes in order.

    The server feeds nodes 0..k-1; node i feeds i*k+k .. i*k+2k-1 (shifted by
    one heap level), so that the first nodes of the chain order are the
    inner nodes and each subtree stays close in the order.
    """
    if arity < 1:
        raise ValueError("tree arity must be at least 1")
    layout: dict[int, list[int]] = {-1: list(range(min(arity, count)))}
    for index in range(count):
        first = (index + 1) * arity
        layout[index] = list(range(first, min(first + arity, count)))
    return layout


def descendants(layout: Mapping[int, Sequence[int]], index: int) -> list[int]:
    """Every node below `index` in a layout (what a failure of `index` cuts off)."""
    found: list[int] = []
    stack = list(layout.get(index, ()))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(layout.get(child, ()))
    return sorted(found)
