"""The tree mode's scheduler (remote/ledger.py): pull-based grants, lost relays rejoined or decided, no node run twice."""

from __future__ import annotations

from kadeploy.remote.ledger import Ledger, NodeQueue
from kadeploy.remote.result import CommandResult


def _address(name: str) -> str:
    """n<i> at 10.0.0.<i>; f<i> (fillers) at 10.0.1.<i>."""
    return f"10.0.{1 if name[0] == 'f' else 0}.{name[1:]}"


def _hosts(count: int) -> dict[str, str]:
    return {f"n{i}": _address(f"n{i}") for i in range(1, count + 1)}


def _ok(host: str) -> CommandResult:
    return CommandResult(host, 0, "out", "")


def _at(*names: str) -> list[tuple[str, str]]:
    return [(name, _address(name)) for name in names]


def test_subtrees_are_runs_of_neighbours_and_an_idle_relay_steals_a_late_ones_span():
    now = [0.0]
    ledger = Ledger(_hosts(12), steal_after=2.0, clock=lambda: now[0])
    assert ledger.first_level(2) == ["n1", "n7"]           # spans n1-n6, n7-n12
    assert ledger.want("n1", 2) == _at("n2", "n4")         # spans n2-n3, n4-n6
    assert ledger.want("n4", 4) == _at("n5", "n6")         # its span is exhausted: the rest of the wish waits
    assert ledger.parked == {"n4": 2}
    assert ledger.dispatch() == {}                         # n7 and n2 are not late yet
    now[0] = 2.5
    # n7 has not asked for its span (n8-n12) within 2 s: the idle n4 takes it, in two parts
    assert ledger.dispatch() == {"n4": _at("n8", "n10")}
    assert ledger.stolen == 2 and ledger.parent["n10"] == "n4"
    assert ledger.want("n7", 3) == [] and ledger.parked["n7"] == 3    # n7 keeps only itself
    assert ledger.want("n10", 8) == _at("n11", "n12")
    now[0] = 5.0                    # n2 (span n2-n3) and n8 (n8-n9, granted at 2.5) never asked either
    assert ledger.dispatch() == {"n7": _at("n3"), "n10": _at("n9")}
    assert len(ledger.queue) == 0 and set(ledger.grants.values()) == {1} and len(ledger.grants) == 12


def test_a_failed_relays_span_is_taken_at_once_by_an_idle_relay_or_the_server():
    ledger = Ledger(_hosts(8))
    assert ledger.first_level(2) == ["n1", "n5"]           # spans n1-n4, n5-n8
    assert ledger.want("n1", 8) == _at("n2", "n3", "n4")
    ledger.on_failed("n5", "Connection refused")
    assert ledger.dispatch() == {"n1": _at("n6", "n7", "n8")}
    server = Ledger(_hosts(8))
    server.first_level(2)
    assert server.first_level(1) == []                      # nobody is late: the server waits
    server.on_failed("n5", "Connection refused")
    assert server.first_level(1) == ["n6"]                  # the failed relay's span, whole (n6-n8)
    assert server.want("n6", 8) == _at("n7", "n8")


def test_a_run_of_nodes_is_crossed_by_a_few_links_not_by_every_node_past_it():
    """10,000 nodes, arity 8, every relay asking for its 8 slots: count the links crossing n3334|n3335."""
    hosts = {f"n{i}": f"h{i}" for i in range(1, 10_001)}
    ledger = Ledger(hosts)
    asking = ledger.first_level(8)
    while asking:
        asking = [host for agent in asking for host, _ in ledger.want(agent, 8)]
    assert len(ledger.parent) == 10_000 and set(ledger.grants.values()) == {1}
    index = {host: number for number, host in enumerate(hosts)}
    crossing = [host for host, parent in ledger.parent.items()
                if parent is not None and (index[host] < 3334) != (index[parent] < 3334)]
    assert len(crossing) <= 8 * 5, crossing                # about one per level (plain queue order: 6,666, every node past it)


def test_the_queue_keeps_a_node_once_in_its_place():
    queue = NodeQueue(f"n{i}" for i in range(1, 9))
    assert queue.take(None, 3) == ["n1", "n3", "n6"]
    queue.append("n3")                          # given back: in its place again
    queue.append("n3")                          # once
    queue.append("n9")                          # new: last
    assert list(queue) == ["n2", "n3", "n4", "n5", "n7", "n8", "n9"]
    assert queue.drain() == ["n2", "n3", "n4", "n5", "n7", "n8", "n9"] and len(queue) == 0


def test_a_want_larger_than_the_queue_is_parked_and_served_by_dispatch():
    ledger = Ledger(_hosts(3))
    ledger.first_level(1)
    assert [host for host, _ in ledger.want("n1", 4)] == ["n2", "n3"]
    assert ledger.parked == {"n1": 2}
    assert ledger.dispatch() == {}  # nothing queued


def _ordered(*names: str) -> Ledger:
    """A ledger of these nodes in this order (the order decides the tree's shape); f-names are fillers."""
    return Ledger({name: _address(name) for name in names})


def _tree() -> Ledger:
    """n1, n2 first level; n3, n4 under n1; n5, n6 under n3; n7 under n2; n8 queued in n5's span.

    The order is the one that gives this shape, each relay splitting its span
    among the children it asks for (fillers, never granted here, make the spans
    that long)."""
    ledger = _ordered("n1", "n3", "n5", "n8", "n6", "f1", "n4", "f2", "f3", "f4", "f5",
                      "n2", "n7", *(f"f{i}" for i in range(6, 15)))
    assert ledger.first_level(2) == ["n1", "n2"]
    assert [host for host, _ in ledger.want("n1", 2)] == ["n3", "n4"]
    assert [host for host, _ in ledger.want("n3", 2)] == ["n5", "n6"]
    assert [host for host, _ in ledger.want("n2", 1)] == ["n7"]
    for host in ("n1", "n2", "n3", "n4", "n5", "n6", "n7"):
        ledger.on_started(host)
    return ledger


def test_a_lost_relay_is_granted_again_to_its_parent_and_its_adoption_keeps_its_subtree():
    ledger = _tree()
    assert ledger.on_result(_ok("n5"))
    ledger.on_lost("n3", by="n1")
    assert ledger.rejoin == {"n3": 0} and not ledger.results.keys() - {"n5"}  # nothing decided by the loss
    assert not ledger.reachable("n3") and not ledger.reachable("n6") and ledger.reachable("n4")
    assert ledger.joins() == ({"n1": [("n3", "10.0.0.3")]}, [])
    assert ledger.joins() == ({}, [])           # one join at a time per node
    ledger.on_hello("n3", adopted=True)         # the orphan answered through the new link
    assert not ledger.reachable("n3")           # ... but its replay is not over
    ledger.on_synced("n3", ["n5", "n6"])
    assert ledger.rejoin == {} and ledger.reachable("n6") and ledger.root("n6") == "n1"
    assert ledger.grants["n3"] == 1             # granted from the queue once, joined once: never run twice


def test_an_adopted_relay_is_granted_again_what_its_lost_link_did_not_deliver():
    ledger = _tree()
    ledger.on_lost("n3", by="n1")
    ledger.joins()
    ledger.on_hello("n3", adopted=True)
    ledger.on_synced("n3", ["n5"])              # the grant of n6 died with the old link
    assert ledger.rejoin == {"n6": 0}
    assert ledger.joins() == ({"n3": [("n6", "10.0.0.6")]}, [])
    ledger.on_hello("n6", adopted=False)        # no agent of the run was there: started afresh
    assert ledger.rejoin == {} and ledger.reachable("n6")


def test_a_dead_relay_is_decided_and_its_children_are_granted_to_its_parent():
    ledger = _tree()
    ledger.on_lost("n3", by="n1")
    ledger.joins()
    ledger.on_gone("n3", "Already started by another relay for this run")
    assert ledger.results["n3"].error.startswith("Relay n3 lost: the command had started")  # never rerun
    assert ledger.rejoin == {"n5": 0, "n6": 0} and ledger.parent["n5"] == "n1"
    assert ledger.joins() == ({"n1": [("n5", "10.0.0.5"), ("n6", "10.0.0.6")]}, [])
    ledger.on_hello("n5", adopted=True)
    ledger.on_synced("n5", [])
    ledger.on_failed("n6", "Connection refused", by="n1")  # one failed try: granted again
    assert ledger.rejoin == {"n6": 1} and "n6" not in ledger.results
    assert ledger.joins() == ({"n1": [("n6", "10.0.0.6")]}, [])
    ledger.on_failed("n6", "Connection refused", by="n1")  # MAX_JOINS tries: decided
    assert ledger.results["n6"].error.startswith("Relay n6 lost") and ledger.rejoin == {}
    assert ledger.root("n5") == "n1" and "n3" not in ledger.parent


def test_a_lost_first_level_relay_is_linked_again_by_the_server():
    ledger = _tree()
    ledger.on_lost("n1", by=None)
    assert ledger.joins() == ({}, ["n1"])
    ledger.on_failed("n1", "Connection refused", by=None)
    ledger.joins()
    ledger.on_failed("n1", "Connection refused", by=None)
    assert ledger.results["n1"].error.startswith("Relay n1 lost")
    assert ledger.rejoin == {"n3": 0, "n4": 0} and ledger.parent["n3"] is None
    assert ledger.joins() == ({}, ["n3", "n4"])


def test_reports_from_a_relay_that_is_no_longer_the_parent_are_ignored():
    ledger = _tree()
    ledger.on_lost("n5", by="n1")               # n5 is n3's child, not n1's
    assert ledger.rejoin == {}
    ledger.on_failed("n5", "Connection refused", by="n2")
    assert "n5" not in ledger.results
    ledger.on_lost("n3", by="n1")
    ledger.joins()
    ledger.on_kept("n3", by="n1")               # n1 still held it: nothing was lost
    assert ledger.rejoin == {} and ledger.reachable("n5")


def test_a_lost_relay_whose_subtree_is_decided_is_dropped():
    ledger = _tree()
    for host in ("n3", "n5", "n6"):
        ledger.on_result(_ok(host))
    ledger.on_lost("n3", by="n1")
    assert ledger.rejoin == {} and "n3" not in ledger.parent and "n5" not in ledger.parent
    ledger.queue.append("n9")
    ledger.address["n9"] = "10.0.0.9"
    assert ledger.want("n3", 1) == []           # no grant to a relay that is not linked


def test_events_from_a_node_out_of_the_tree_are_ignored_and_results_are_kept_once():
    ledger = Ledger(_hosts(3))
    ledger.first_level(1)
    ledger.want("n1", 1)
    assert not ledger.on_result(_ok("n3"))      # still queued: not from any relay
    assert ledger.want("n1", 1) == [("n3", "10.0.0.3")]
    assert ledger.on_result(_ok("n3"))
    assert not ledger.on_result(CommandResult("n3", 1))
    assert ledger.results["n3"].exit_status == 0


def test_failed_nodes_are_results_and_done_counts_every_node():
    ledger = Ledger(_hosts(2))
    ledger.first_level(1)
    ledger.want("n1", 1)
    ledger.on_failed("n2", "Connection refused", by="n1")
    assert not ledger.done
    ledger.on_result(_ok("n1"))
    assert ledger.done
    assert ledger.results["n2"] == CommandResult("n2", None, error="Connection refused")


def test_decided_nodes_are_listed_in_order_for_a_stream_run_and_a_dropped_queue_decides_the_rest():
    ledger = _ordered("n1", "n3", "n4", "n2", "n5", "n6")
    ledger.first_level(2)                       # n1, n2
    ledger.want("n1", 2)                        # n3, n4
    ledger.on_started("n1")
    ledger.on_started("n3")
    ledger.on_result(_ok("n3"))
    ledger.on_failed("n4", "Connection refused", by="n1")
    ledger.on_lost("n1")                        # lost, then gone: n1 had started, failed, not rerun
    ledger.joins()
    ledger.on_gone("n1", "Already started")
    assert ledger.decided == ["n3", "n4", "n1"]
    ledger.drop_queue("Not started: the broadcast ended before this node's turn")
    assert ledger.decided[3:] == ["n5", "n6"] and not ledger.queue
    assert ledger.results["n6"].error == "Not started: the broadcast ended before this node's turn"
    assert not ledger.done                      # n2 is still running: its stream decides it


def test_a_grant_lost_deeper_in_an_adopted_subtree_is_found_by_the_subtrees_sync():
    ledger = _tree()
    assert ledger.want("n5", 1) == [("n8", "10.0.0.8")]  # sent down through n1, n3: n1's link dies
    ledger.on_lost("n1", by=None)
    ledger.joins()
    ledger.on_hello("n1", adopted=True)
    ledger.on_synced("n1", ["n3", "n4"])
    assert ledger.rejoin == {}
    ledger.on_synced("n5", [])                  # n5 never got the grant: n8 is granted to it again
    assert ledger.rejoin == {"n8": 0}
    assert ledger.joins() == ({"n5": [("n8", "10.0.0.8")]}, [])
    ledger.on_synced("n5", [])                  # ... and that grant died too: once more
    assert ledger.joins() == ({"n5": [("n8", "10.0.0.8")]}, [])


def test_a_child_cut_off_for_its_silence_before_its_hello_is_granted_again_then_decided_with_why():
    ledger = Ledger(_hosts(3))
    ledger.first_level(1)
    ledger.want("n1", 2)                        # n2, n3: their ssh and python3 are slow to start
    silent = "Agent silent for 15s after its ssh started: taken as lost"
    ledger.on_lost("n2", by="n1", error=silent)
    assert ledger.rejoin == {"n2": 0} and "n2" not in ledger.results
    for _ in range(2):                          # MAX_JOINS tries, each as silent
        assert ledger.joins() == ({"n1": [("n2", "10.0.0.2")]}, [])
        ledger.on_lost("n2", by="n1", error=silent)
    assert ledger.results["n2"].error == silent  # never started: decided with why, not as a lost relay
    ledger.on_lost("n3", by="n1", error=silent)
    ledger.joins()
    ledger.on_hello("n3", adopted=False)        # it had not even started: started afresh by the new grant
    assert ledger.rejoin == {} and ledger.counts == {"lost": 2, "adopted": 0, "afresh": 1, "gone": 1}
