"""Databases for the DB-layer tests: SQLite always; MariaDB and PostgreSQL when their services answer.

Each test gets its own database `kadeploy_test_<random>`, created and dropped here.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from kadeploy.db import Database
from kadeploy.server.app import prepare_database
from tests.requirements import unmet

REQUIREMENT = {"mysql": "mariadb", "postgresql": "postgresql"}  # tests/requirements.py names
SERVERS = {"mysql": "mysql+pymysql://root@127.0.0.1:3306/", "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"}


def _admin(backend: str):
    engine = create_engine(SERVERS[backend], isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except Exception as exc:  # service not running on this machine
        unmet(REQUIREMENT[backend], f"cannot connect to {SERVERS[backend]}: {exc}")
    return engine


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.db),
                        pytest.param("postgresql", marks=pytest.mark.db)])
def database(request, tmp_path):
    backend = request.param
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'kadeploy.db'}")
        prepare_database(database)
        yield database
        database.dispose()
        return
    name = f"kadeploy_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(backend)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = SERVERS[backend].rsplit("/", 1)[0] + f"/{name}"
    database = Database(url)
    try:
        prepare_database(database)
        yield database
    finally:
        database.dispose()
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
