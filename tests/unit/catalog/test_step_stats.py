"""Duration statistics of kastat3 --steps (db.stats.summarize / step_durations) and the runner's step timer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from kadeploy.db import Database
from kadeploy.db import stats as db_stats
from kadeploy.steps.timing import TimedLibrary


def test_summarize_count_median_nearest_rank_p90_max():
    assert db_stats.summarize([5.0]) == {"count": 1, "median": 5.0, "p90": 5.0, "max": 5.0}
    assert db_stats.summarize([4, 1, 3, 2]) == {"count": 4, "median": 2.5, "p90": 4, "max": 4}
    values = list(range(1, 21))  # 1..20: 90 % of 20 runs took at most 18 s
    assert db_stats.summarize(values) == {"count": 20, "median": 10.5, "p90": 18, "max": 20}


def test_step_durations_over_filtered_records(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.migrate()
    records = [{"wid": f"D-{i}", "user": "u", "hostname": f"n{i}", "start": 100 + i, "step1": "SetA",
                "step1_duration": 10 * (i + 1), "success": True,
                "micro_steps": [["SetA", "reboot", float(i + 1)], ["SetA", "reboot", 1.0], "garbage"]}
               for i in range(3)]
    records.append({"wid": "R-9", "user": "u", "hostname": "n9", "start": 200, "step1": "RebootB",
                    "step1_duration": 99, "success": True})
    database.transaction(lambda s: db_stats.add_records(s, records))
    everything = database.transaction(lambda s: db_stats.step_durations(s, db_stats.StatsFilter()))
    assert everything["macro"] == {"SetA": {"count": 3, "median": 20, "p90": 30, "max": 30},
                                   "RebootB": {"count": 1, "median": 99, "p90": 99, "max": 99}}
    assert everything["micro"] == {"SetA/reboot": {"count": 6, "median": 1.0, "p90": 3.0, "max": 3.0}}
    deploys = database.transaction(lambda s: db_stats.step_durations(s, db_stats.StatsFilter(operation="deploy",
                                                                                             nodes=["n0"])))
    assert deploys["macro"] == {"SetA": {"count": 1, "median": 10, "p90": 10, "max": 10}}
    database.dispose()


class _Steps:
    def __init__(self) -> None:
        self.extra = "kept"

    def microsteps(self, implementation: str) -> list[str]:
        return ["reboot"]

    async def run(self, micro, ctx, nodes):
        await asyncio.sleep(0.05 if micro == "reboot" else 10)
        return SimpleNamespace(ok=list(nodes), ko={})

    async def run_custom(self, op, ctx, nodes):
        return SimpleNamespace(ok=list(nodes), ko={})


async def test_timed_library_credits_each_node_even_when_the_step_is_killed():
    timed = TimedLibrary(_Steps())
    ctx = SimpleNamespace(implementation="SetDeploymentEnvUntrusted", micro="reboot")
    await timed.run("reboot", ctx, ["n1", "n2"])
    killed = SimpleNamespace(implementation="SetDeploymentEnvUntrusted", micro="wait_reboot")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await timed.run("wait_reboot", killed, ["n1"])
    assert [entry[:2] for entry in timed.of("n1")] == [["SetDeploymentEnvUntrusted", "reboot"],
                                                      ["SetDeploymentEnvUntrusted", "wait_reboot"]]
    assert 0.04 <= timed.of("n2")[0][2] < 1 and 0.04 <= timed.of("n1")[1][2] < 1
    assert timed.microsteps("x") == ["reboot"] and timed.extra == "kept"
