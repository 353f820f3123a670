"""The tree mode's scheduler (remote/ledger.py): pull-based grants, lost relays, no node granted twice while live."""

from __future__ import annotations

from kadeploy.remote.ledger import Ledger
from kadeploy.remote.result import CommandResult


def _hosts(count: int) -> dict[str, str]:
    return {f"n{i}": f"10.0.0.{i}" for i in range(1, count + 1)}


def _ok(host: str) -> CommandResult:
    return CommandResult(host, 0, "out", "")


def test_first_level_then_grants_follow_the_wants_in_queue_order():
    ledger = Ledger(_hosts(10))
    assert ledger.first_level(2) == ["n1", "n2"]
    assert ledger.want("n1", 3) == [("n3", "10.0.0.3"), ("n4", "10.0.0.4"), ("n5", "10.0.0.5")]
    assert ledger.want("n3", 2) == [("n6", "10.0.0.6"), ("n7", "10.0.0.7")]
    assert ledger.root("n7") == "n1" and ledger.root("n2") == "n2" and ledger.root("n9") is None
    assert ledger.want("nobody", 2) == []  # only agents in the tree get work


def test_a_want_larger_than_the_queue_is_parked_and_served_by_dispatch():
    ledger = Ledger(_hosts(3))
    ledger.first_level(1)
    assert [host for host, _ in ledger.want("n1", 4)] == ["n2", "n3"]
    assert ledger.parked == {"n1": 2}
    assert ledger.dispatch() == {}  # nothing queued


def test_a_lost_relay_gives_back_unstarted_nodes_fails_started_ones_keeps_results():
    ledger = Ledger(_hosts(8))
    ledger.first_level(2)                       # n1, n2
    ledger.want("n1", 2)                        # n3, n4 under n1
    ledger.want("n3", 2)                        # n5, n6 under n3
    for host in ("n1", "n3", "n5"):
        ledger.on_started(host)
    assert ledger.on_result(_ok("n5"))
    ledger.want("n2", 1)                        # n7 under n2 (another branch)
    ledger.want("n7", 3)                        # n8, then parked for 2
    requeued = ledger.on_lost("n1")
    assert sorted(requeued) == ["n4", "n6"]     # granted, never started
    assert ledger.results["n5"].ok              # finished: kept
    for host in ("n1", "n3"):                   # started, cut with their relay: never rerun
        assert ledger.results[host].error.startswith("Relay n1 lost")
    assert list(ledger.queue) == ["n4", "n6"]
    # the parked want of the live branch takes them: "stolen" from the lost branch
    assert ledger.dispatch() == {"n7": [("n4", "10.0.0.4"), ("n6", "10.0.0.6")]}
    assert ledger.grants["n4"] == 2 and ledger.grants["n8"] == 1
    assert ledger.root("n4") == "n2"


def test_events_from_a_lost_subtree_are_ignored_and_results_are_kept_once():
    ledger = Ledger(_hosts(3))
    ledger.first_level(1)
    ledger.want("n1", 2)
    ledger.on_lost("n1")
    assert not ledger.on_result(_ok("n2"))      # n2 went back to the queue: not from that path
    assert ledger.want("n1", 1) == []
    ledger.first_level(3)
    assert ledger.on_result(_ok("n2"))
    assert not ledger.on_result(CommandResult("n2", 1))
    assert ledger.results["n2"].exit_status == 0


def test_failed_nodes_are_results_and_done_counts_every_node():
    ledger = Ledger(_hosts(2))
    ledger.first_level(1)
    ledger.want("n1", 1)
    ledger.on_failed("n2", "Connection refused")
    assert not ledger.done
    ledger.on_result(_ok("n1"))
    assert ledger.done
    assert ledger.results["n2"] == CommandResult("n2", None, error="Connection refused")


def test_decided_nodes_are_listed_in_order_for_a_stream_run_and_a_dropped_queue_decides_the_rest():
    ledger = Ledger(_hosts(6))
    ledger.first_level(2)                       # n1, n2
    ledger.want("n1", 2)                        # n3, n4
    ledger.on_started("n1")
    ledger.on_started("n3")
    ledger.on_result(_ok("n3"))
    ledger.on_failed("n4", "Connection refused")
    ledger.on_lost("n1")                        # n1 had started: failed, not rerun
    assert ledger.decided == ["n3", "n4", "n1"]
    ledger.drop_queue("Not started: the broadcast ended before this node's turn")
    assert ledger.decided[3:] == ["n5", "n6"] and not ledger.queue
    assert ledger.results["n6"].error == "Not started: the broadcast ended before this node's turn"
    assert not ledger.done                      # n2 is still running: its stream decides it
