"""Engine creation, migrations and transactions (room `db`).

One `Database` per server process. SQLite (a file, the default) runs in WAL
mode and every transaction starts with `BEGIN IMMEDIATE`, so that writers
queue on the database lock instead of failing half-way; MariaDB/MySQL
(`mysql+pymysql`) and PostgreSQL (`postgresql+psycopg2`) use their own row
locks. `transaction()` re-runs a unit of work when the database reports a
deadlock or a lock timeout, which is how concurrent node claims stay both
atomic and live.

The SQLAlchemy calls are blocking: the server calls them through `run()`,
which hands them to a worker thread (a small pool shared by the whole
process, not a thread per node) so that the event loop never waits on SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from kadeploy.errors import ConfigError, ErrorCode, KadeployError

log = logging.getLogger("kadeploy.db")

T = TypeVar("T")

_DRIVERS = {"sqlite": "sqlite", "mysql": "mysql+pymysql", "postgresql": "postgresql+psycopg2"}
# Error numbers meaning "try the transaction again": MySQL deadlock / lock wait timeout.
_MYSQL_RETRYABLE = {1205, 1213}
# PostgreSQL SQLSTATEs: serialization failure, deadlock detected.
_PG_RETRYABLE = {"40001", "40P01"}


def database_url(kind: str, name: str, *, host: str = "", login: str = "", passwd: str = "",
                 port: int | None = None) -> URL:
    """Build the SQLAlchemy URL of server.conf's `database` section (kind sqlite/mysql/postgresql)."""
    driver = _DRIVERS.get(kind)
    if driver is None:
        raise ConfigError(f"server.conf: database/kind: expected one of sqlite, mysql, postgresql, got {kind!r}")
    if not name:
        raise ConfigError("server.conf: database/name: missing (database name, or file path for sqlite)")
    if kind == "sqlite":
        return URL.create(driver, database=name)
    return URL.create(driver, username=login or None, password=passwd or None, host=host or "localhost",
                      port=port, database=name)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook decide when transactions start (pysqlite's own
    # implicit BEGIN is deferred, which would let two writers read then collide).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and immediate transactions."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True, "pool_size": 10, "max_overflow": 20,
                              "pool_timeout": 30}
    if url.get_backend_name() == "mysql":
        kwargs["connect_args"] = {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}
        kwargs["pool_recycle"] = 3600
    elif url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    return create_engine(url, **kwargs)


def _is_retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    pgcode = getattr(orig, "pgcode", None)
    if pgcode in _PG_RETRYABLE:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRYABLE:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


class Database:
    """The server's database: an engine, a session factory and retrying transactions."""

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.engine = create_db_engine(self.url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        """`sqlite`, `mysql` or `postgresql`."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (run at every server start)."""
        from kadeploy.db.migrations import upgrade_head

        try:
            upgrade_head(self.engine)
        except SQLAlchemyError as exc:
            raise KadeployError(ErrorCode.DATABASE_ERROR,
                                f"Cannot migrate the database {self.url.render_as_string()}: {exc}") from None

    @contextmanager
    def session(self, *, dry_run: bool = False) -> Iterator[Session]:
        """A session in one transaction, committed on success and rolled back on error.

        With `dry_run` it is rolled back in every case, after a flush: the
        writes reach the database, so that its constraints refuse what they
        would refuse for real, and then nothing of them stays.
        """
        with self._sessions() as session, session.begin() as transaction:
            yield session
            if dry_run:
                session.flush()
                transaction.rollback()

    def transaction(self, work: Callable[[Session], T], *, attempts: int = 8, dry_run: bool = False) -> T:
        """Run `work(session)` in one transaction, again (up to `attempts`) after a deadlock.

        `dry_run`: the transaction is rolled back instead of committed (a dry-run request).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.session(dry_run=dry_run) as session:
                    return work(session)
            except DBAPIError as exc:
                if attempt < attempts and _is_retryable(exc):
                    log.debug("transaction retried after %s", exc.orig)
                    time.sleep(0.01 * attempt)
                    continue
                raise KadeployError(ErrorCode.DATABASE_ERROR, f"Database error: {exc.orig}") from None
        raise AssertionError("unreachable")

    async def run(self, work: Callable[[Session], T], *, timeout: float = 60.0, dry_run: bool = False) -> T:
        """`transaction(work)` from asyncio code, in a worker thread, bounded by `timeout`."""
        return await asyncio.wait_for(asyncio.to_thread(self.transaction, work, dry_run=dry_run), timeout)

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()
