"""Statistics with micro-step durations, rights and environments on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from kadeploy.db import environments as db_envs
from kadeploy.db import rights as db_rights
from kadeploy.db import stats as db_stats


def test_micro_step_durations_round_trip_and_summaries(database):
    records = [{"wid": f"D-{i}", "user": "alice", "hostname": "n1", "start": 1000 + i, "step1": "SetA",
                "step1_duration": 10 + i, "success": i != 1, "md5": "ab" * 16,
                "micro_steps": [["SetA", "reboot", 1.5 + i]]} for i in range(3)]
    database.transaction(lambda s: db_stats.add_records(s, records))
    rows = database.transaction(lambda s: db_stats.query_records(s, db_stats.StatsFilter(), ("wid", "success", "md5")))
    assert rows == [["D-0", True, "ab" * 16], ["D-1", False, "ab" * 16], ["D-2", True, "ab" * 16]]
    steps = database.transaction(lambda s: db_stats.step_durations(s, db_stats.StatsFilter()))
    assert steps["micro"] == {"SetA/reboot": {"count": 3, "median": 2.5, "p90": 3.5, "max": 3.5}}
    assert database.transaction(lambda s: db_stats.failure_rates(s, db_stats.StatsFilter())) == {"n1": 0.333}


def test_rights_wildcards_and_environment_checksums(database):
    database.transaction(lambda s: db_rights.add_rights(s, "alice", ["*"], ["/dev/sda3"]))
    missing = database.transaction(lambda s: db_rights.nodes_without_right(s, "alice", ["n1", "n2"], "/dev/sda5"))
    assert missing == ["n1", "n2"]
    assert database.transaction(lambda s: db_rights.nodes_without_right(s, "alice", ["n1"], "/dev/sda3")) == []
    env = {"name": "débian ünicode", "version": 1, "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
           "image": {"file": "server:///e.tgz", "kind": "tar", "compression": "zstd", "md5": "cd" * 16}}
    database.transaction(lambda s: db_envs.add_environment(s, env, "alice"))
    stored = database.transaction(lambda s: db_envs.to_api(db_envs.find_environments(s, name="débian ünicode")[0]))
    assert stored["image"]["md5"] == "cd" * 16 and stored["user"] == "alice"
