"""Alembic migrations driven from code, with no alembic.ini (room `db`).

The scripts live in `kadeploy/db/alembic/`; `upgrade_head(engine)` is what the
server runs at start. Administrators can also run them by hand:
`python -m kadeploy.db.migrations <database-url>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

SCRIPT_LOCATION = Path(__file__).with_name("alembic")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to `engine` (passed to env.py through `attributes`)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["engine"] = engine
    return config


def upgrade_head(engine: Engine) -> None:
    """Apply every migration not yet applied to the database behind `engine`."""
    command.upgrade(alembic_config(engine), "head")


def main(argv: list[str] | None = None) -> int:
    """`python -m kadeploy.db.migrations URL`: upgrade that database to head."""
    from kadeploy.db.database import create_db_engine

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kadeploy.db.migrations DATABASE_URL", file=sys.stderr)
        return 2
    upgrade_head(create_db_engine(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
