"""Rights checks and rights management (karights3) (room `server`, reference section 9).

Every operation on nodes needs *some* right on all of them; a deployment also
needs the right on the deploy partition (`<block_device><partition>`).
Almighty users pass every check, and `rights/kind: dummy` disables checks.
"""

from __future__ import annotations

from collections.abc import Iterable

from kadeploy.db import Database
from kadeploy.db import rights as db_rights
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.server.auth import Identity

INSUFFICIENT = "You do not have sufficient rights to perform the operation on all the nodes"


class RightsService:
    """Checks and edits the `rights` table."""

    def __init__(self, database: Database, kind: str = "db") -> None:
        self.database = database
        self.kind = kind

    async def check(self, identity: Identity, nodes: Iterable[str], part: str | None = None) -> None:
        """Error 6 unless `identity` may use all `nodes` (and `part` on them, if given)."""
        if self.kind == "dummy" or identity.admin:
            return
        node_list = list(nodes)
        missing = await self.database.run(
            lambda s: db_rights.nodes_without_right(s, identity.user, node_list, part))
        if missing:
            where = f" (partition {part})" if part else ""
            raise KadeployError(ErrorCode.INVALID_RIGHTS, f"{INSUFFICIENT}: {fold(missing)}{where}")

    async def add(self, username: str, nodes: list[str], parts: list[str], overwrite: bool,
                  almighty_users: Iterable[str], *, dry_run: bool = False) -> dict[str, dict[str, list[str]]]:
        """karights3 -a: grant; other non-admin users' rights on these nodes conflict (11) unless overwrite.

        Returns the rights added (a dry run: that would be added, and none is).
        """
        admins = set(almighty_users)

        def work(session):  # type: ignore[no-untyped-def]
            others = {user: hosts for user, hosts in db_rights.other_users_on(session, nodes, username).items()
                      if user not in admins}
            if others and "*" not in nodes:
                if not overwrite:
                    detail = ", ".join(f"{user} on {fold(h for h in hosts if h != '*') or '*'}"
                                       for user, hosts in sorted(others.items()))
                    raise KadeployError(ErrorCode.CONFLICTING_ELEMENTS,
                                        f"Some nodes are already assigned to other users ({detail}); "
                                        "use overwrite to remove their rights")
                for user in others:
                    db_rights.delete_rights(session, user, nodes)
            added = db_rights.add_rights(session, username, nodes, parts)
            if not added:
                raise KadeployError(ErrorCode.NOTHING_MODIFIED, f"The rights of {username} were already set")
            result: dict[str, dict[str, list[str]]] = {username: {}}
            for node, part in added:
                result[username].setdefault(node, []).append(part)
            return result

        return await self.database.run(work, dry_run=dry_run)

    async def list(self, username: str | None, nodes: list[str] | None) -> dict[str, dict[str, list[str]]]:
        return await self.database.run(lambda s: db_rights.list_rights(s, username, nodes))

    async def delete(self, username: str, nodes: list[str] | None, parts: list[str] | None, *,
                     dry_run: bool = False) -> list[str]:
        """karights3 -d; returns the nodes (among `nodes`, or all) where the user has no right left.

        A dry run answers the same and deletes nothing.
        """

        def work(session):  # type: ignore[no-untyped-def]
            removed = db_rights.delete_rights(session, username, nodes, parts)
            if not removed:
                raise KadeployError(ErrorCode.NOTHING_MODIFIED, f"No rights of {username} to delete")
            remaining = db_rights.list_rights(session, username).get(username, {})
            if "*" in remaining:
                return []
            if nodes is None or "*" in nodes:
                return ["*"]
            return [node for node in nodes if node not in remaining]

        return await self.database.run(work, dry_run=dry_run)
