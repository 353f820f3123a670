"""Database room: SQLAlchemy models, Alembic migrations, sessions and atomic node locking.

Imports only `kadeploy.errors` and `kadeploy.nodeset`. Modules:
`database` (engine, migrations, retrying transactions), `models`, `locking`
(node claims), `workflows` (persisted workflows, crash recovery), `nodes`
(node states), `rights`, `environments`, `stats`.
"""

from kadeploy.db.database import Database, create_db_engine, database_url

__all__ = ["Database", "create_db_engine", "database_url"]
