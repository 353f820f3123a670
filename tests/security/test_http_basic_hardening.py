"""HTTP Basic: bcrypt off the event loop, unknown users as slow as known ones, failures slowed per source.

Over a real socket: `create_app` served by uvicorn with kadeploy3d's listen
options, an htpasswd file with bcrypt entries.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
from tlslab import AppServer

from kadeploy.server.app import create_app
from kadeploy.server.settings import AuthSettings
from kadeploy.server.throttle import FailureThrottle
from kadeploy_testbed.dummy import DummyRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "server"))
from server_fixtures import database_at, make_settings  # noqa: E402

pytestmark = pytest.mark.slow


def served(tmp_path: Path, rounds: int, throttle: FailureThrottle | None = None) -> AppServer:
    dbfile = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=rounds)).decode().replace("$2b$", "$2y$")
    dbfile.write_text(f"alice:{hashed}\n")
    settings = make_settings(auth=AuthSettings(http_basic_dbfile=dbfile))
    app = create_app(settings, database_at(tmp_path / "kadeploy.db"), DummyRunner())
    if throttle is not None:
        app.state.ctx.authenticator.throttle = throttle
    return AppServer(app, settings, tmp_path / "run")


def timed(client: httpx.Client, user: str, password: str) -> tuple[int, float]:
    start = time.perf_counter()
    status = client.get("/nodes", auth=(user, password)).status_code
    return status, time.perf_counter() - start


def test_unknown_and_known_users_take_the_same_time(tmp_path):
    with served(tmp_path, rounds=10, throttle=FailureThrottle(free=10**6)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        assert timed(client, "alice", "s3cret")[0] == 200
        known, unknown = [], []
        for _ in range(12):
            status, seconds = timed(client, "alice", "wrong")
            assert status == 401
            known.append(seconds)
            status, seconds = timed(client, "nobody", "wrong")
            assert status == 401
            unknown.append(seconds)
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    assert known_median > 0.01, "bcrypt at cost 10 should take tens of milliseconds"
    assert abs(known_median - unknown_median) < 0.25 * known_median, (known, unknown)


def test_password_checks_leave_the_event_loop_free(tmp_path):
    with served(tmp_path, rounds=13, throttle=FailureThrottle(free=10**6)) as server:
        slow: list[float] = []

        def check_passwords() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                slow.append(timed(client, "alice", "wrong")[1])

        checkers = [threading.Thread(target=check_passwords) for _ in range(2)]
        for checker in checkers:
            checker.start()
        time.sleep(0.1)                  # both checks are running now
        with httpx.Client(base_url=server.url, timeout=60) as client:
            start = time.perf_counter()
            assert client.get("/version").status_code == 200
            version_seconds = time.perf_counter() - start
        for checker in checkers:
            checker.join()
    assert min(slow) > 0.3, slow             # cost 13: hundreds of milliseconds each
    assert version_seconds < min(slow) / 2, (version_seconds, slow)


def test_repeated_failures_from_one_source_get_slower(tmp_path):
    with served(tmp_path, rounds=4) as server, httpx.Client(base_url=server.url, timeout=60) as client, \
            httpx.Client(base_url=server.url, timeout=60,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        # the first request pays the server's cold start (bcrypt's thread pool, the database, the
        # connection: 0.41 s once in CI); paid here from another source, whose success counts nothing
        assert timed(other, "alice", "s3cret")[0] == 200
        durations = []
        for _ in range(8):
            status, seconds = timed(client, "alice", "wrong")
            assert status == 401
            durations.append(seconds)
        free, slowed = durations[:5], durations[5:]
        assert max(free) < 0.4, durations
        assert slowed[0] >= 0.45 and slowed[1] >= 0.95 and slowed[2] >= 1.9, durations
        # another source is not slowed by this one's failures
        status, seconds = timed(other, "alice", "s3cret")
        assert status == 200 and seconds < 0.4, seconds


def test_too_many_waiting_attempts_are_refused_at_once():
    now = [0.0]
    throttle = FailureThrottle(free=2, base=1.0, maximum=8.0, refuse_after=10.0, clock=lambda: now[0])
    waits = [throttle.reserve("10.0.0.1") for _ in range(6)]   # in parallel: none answered yet
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:5] == [1.0, 3.0, 7.0]                       # stacked: 1, then +2, then +4
    assert waits[5] is None                                    # would wait 15 s: refused
    assert throttle.reserve("10.0.0.2") == 0.0                 # other sources are not affected


def test_failures_are_forgiven_with_time_and_successes_refunded():
    now = [0.0]
    throttle = FailureThrottle(free=1, base=1.0, decay=10.0, clock=lambda: now[0])
    assert throttle.reserve("10.0.0.1") == 0.0
    throttle.succeeded("10.0.0.1")
    assert len(throttle) == 0                                  # a right password leaves no trace
    throttle.reserve("10.0.0.1")
    assert throttle.reserve("10.0.0.1") == 1.0
    now[0] = 100.0                                             # ten failures' worth of decay
    assert throttle.reserve("10.0.0.1") == 0.0


def test_memory_is_bounded_and_ipv6_counts_per_64():
    throttle = FailureThrottle(capacity=100)
    for index in range(10_000):
        throttle.reserve(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
    assert len(throttle) == 100
    throttle = FailureThrottle(free=1, base=1.0, clock=lambda: 0.0)
    throttle.reserve("2001:db8::1")
    assert throttle.reserve("2001:db8::ffff:2") == 1.0          # same /64: same score
    assert throttle.reserve("2001:db8:0:1::1") == 0.0           # another /64
