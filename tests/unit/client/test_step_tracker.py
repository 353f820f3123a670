"""The live display's per macro-step counts, built from successive /state and /status snapshots."""

from __future__ import annotations

from kadeploy.client.tracker import StepTracker

SET, BCAST, KEXEC, CLASSICAL = ("SetDeploymentEnvUntrusted", "BroadcastEnvKascade", "BootNewEnvKexec",
                                "BootNewEnvClassical")


def counts(tracker: StepTracker) -> dict[str, tuple[int, int, int]]:
    return {name: (p.ok, p.ko, p.running) for name, p in tracker.progress().items()}


def state(macro: str | None, value: str) -> dict[str, str | None]:
    return {"macro": macro, "micro": "x" if macro else None, "state": value}


def test_passed_macro_steps_stay_with_their_nodes_ok_and_failures_count_where_they_happened() -> None:
    tracker = StepTracker()
    tracker.observe({"n1": state(SET, "ok"), "n2": state(SET, "reboot_in_progress"), "n3": state(SET, "ok")},
                    {"c1": {SET: {"wait_reboot": {"nodes": {"OK": [], "KO": [], "**": ["n1", "n2", "n3"]},
                                                  "time": 7}}}})
    assert counts(tracker) == {SET: (0, 0, 3)}
    assert tracker.progress()[SET].time == 7
    tracker.observe({"n1": state(BCAST, "ok"), "n2": state(SET, "ko"), "n3": state(BCAST, "ok")}, {})
    assert counts(tracker) == {SET: (2, 1, 0), BCAST: (0, 0, 2)}
    assert tracker.progress()[SET].time == 7  # the last time seen stays once the step is over
    tracker.observe({"n1": state(KEXEC, "ok"), "n2": state(SET, "ko"), "n3": state(KEXEC, "ok")})
    tracker.observe({"n1": state(None, "ok"), "n2": state(SET, "ko"), "n3": state(KEXEC, "ko")})
    assert counts(tracker) == {SET: (2, 1, 0), BCAST: (2, 0, 0), KEXEC: (1, 1, 0)}
    # a step no poll saw a node in gets no row (Kadeploy3 logs still name it)
    other = StepTracker()
    other.observe({"n1": state(SET, "ok")})
    other.observe({"n1": state(KEXEC, "ok")})
    assert counts(other) == {SET: (1, 0, 0), KEXEC: (0, 0, 1)}


def test_a_fallback_implementation_is_not_counted_ok_for_the_one_it_replaced() -> None:
    tracker = StepTracker()
    tracker.observe({"n1": state(KEXEC, "ok"), "n2": state(KEXEC, "ok")})
    tracker.observe({"n1": state(CLASSICAL, "ok"), "n2": state(None, "ok")})
    assert counts(tracker) == {KEXEC: (1, 0, 0), CLASSICAL: (0, 0, 1)}
    tracker.observe({"n1": state(None, "ok"), "n2": state(None, "ok")})
    assert counts(tracker) == {KEXEC: (1, 0, 0), CLASSICAL: (1, 0, 0)}


def test_rows_follow_the_workflow_order_and_unknown_steps_come_after_in_order_of_appearance() -> None:
    tracker = StepTracker()
    tracker.observe({"n1": state("PowerOnHard", "ok")}, {"c1": {"Zeta": {}}})
    tracker.observe({"n2": state(KEXEC, "ok"), "n3": state(SET, "ok")})
    assert list(tracker.progress()) == [SET, KEXEC, "Zeta", "PowerOnHard"]


def test_junk_snapshots_are_ignored() -> None:
    tracker = StepTracker()
    tracker.observe({"n1": "garbage", "n2": {"macro": 3, "state": None}}, {"c1": ["not", "a", "mapping"]})
    tracker.observe(None, None)
    assert tracker.progress() == {}
