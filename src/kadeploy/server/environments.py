"""Environment catalogue with Kadeploy3's visibility rules (room `server`, reference section 4).

* private: only the owner and almighty users see and use it;
* shared: anybody can use it when naming the owner; listed only when the owner is named;
* public: everybody; only environments owned by an almighty user can be `public`
  (an administrator cannot publish a user's environment, as Kadeploy3).

A refusal of these rules is HTTP 403 with the message, as Kadeploy3's
`envs_rights?` answers (`error_forbidden!`), not an error-code 400.

Descriptions are validated by `kadeploy.catalog.environment.parse_environment`
when that module is installed, else by the minimal checks below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kadeploy.db import Database
from kadeploy.db import environments as db_envs
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.identifiers import check_environment_name, check_user_name
from kadeploy.server.auth import Identity
from kadeploy.server.http import HTTPProblem

VISIBILITIES = ("private", "shared", "public")
PUBLIC_ONLY_ADMINS = 'Only administrators can use the "public" tag'
FILE_FIELDS = ("image", "preinstall", "postinstalls")
MAX_VERSION = 2 ** 31 - 1  # the SQL INTEGER column of versions (MySQL, PostgreSQL)


def check_version(version: int | None) -> int | None:
    """A version a request names, refused (error 7) beyond the column: it would be a database error (HTTP 500)."""
    if version is not None and not 0 <= version <= MAX_VERSION:
        text = str(version) if len(str(version)) <= 20 else f"{str(version)[:20]}..."
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"Invalid environment version {text} "
                                                           f"(0 to {MAX_VERSION})")
    return version


def validate_description(description: Any, source: str = "environment") -> dict[str, Any]:
    """A checked environment description hash (error 7 naming what is wrong)."""
    if not isinstance(description, dict):
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"{source}: the description must be a mapping")
    from kadeploy.catalog.environment import environment_from_dict

    parsed = environment_from_dict(description, source)
    return {k: v for k, v in parsed.to_api_dict().items() if v is not None}


def public_view(env: dict[str, Any]) -> dict[str, Any]:
    """The hash shown to clients: stored checksums are the server's business (Kadeploy3 hides them too),
    and leaving them out keeps `kaenv3 -p` output valid input for `kaenv3 -a`."""
    shown = dict(env)
    for key in ("image", "preinstall"):
        if isinstance(shown.get(key), dict):
            shown[key] = {k: v for k, v in shown[key].items() if k != "md5"}
    if isinstance(shown.get("postinstalls"), list):
        shown["postinstalls"] = [{k: v for k, v in post.items() if k != "md5"} if isinstance(post, dict) else post
                                 for post in shown["postinstalls"]]
    return shown


def _visible(row: Any, identity: Identity, owner_named: bool) -> bool:
    if identity.admin or row.user == identity.user or row.visibility == "public":
        return True
    return row.visibility == "shared" and owner_named


class EnvironmentService:
    """Add, list, look up, modify and delete recorded environments."""

    def __init__(self, database: Database, fetcher: Any = None, almighty_users: Iterable[str] = ("root",)) -> None:
        self.database = database
        self.fetcher = fetcher  # kadeploy.catalog.files.FileFetcher, for checksums; optional
        self.almighty_users = frozenset(almighty_users)

    def _check_public(self, visibility: Any, owner: str) -> None:
        """Only an administrator's environments can be public (kaenvs.rb envs_rights?: the *owner* must be an
        almighty user, on creation as on modification; an administrator cannot publish a user's environment)."""
        if visibility == "public" and owner not in self.almighty_users:
            raise HTTPProblem(403, PUBLIC_ONLY_ADMINS)

    async def _checksums(self, env: dict[str, Any], client: str | None, fields: tuple[str, ...] = FILE_FIELDS,
                         *, dry_run: bool = False) -> None:
        """Record the checksum of each file of `fields`; a dry run only checks that each can be fetched."""
        if self.fetcher is None:
            return
        for holder, key, what in _file_references(env, fields):
            if dry_run:
                await self.fetcher.check(holder[key], client=client, what=what)
            else:
                holder["md5"] = (await self.fetcher.fetch(holder[key], client=client, what=what)).checksum

    async def add(self, identity: Identity, description: Any, client: str | None, *,
                  dry_run: bool = False) -> dict[str, Any]:
        """Record a new environment; a dry run checks all of it and records nothing."""
        env = validate_description(description)
        owner = identity.user
        if identity.admin and isinstance(description, dict) and description.get("user"):
            owner = str(description["user"])
        check_user_name(owner, "environment owner")
        check_environment_name(env.get("name"))
        self._check_public(env.get("visibility"), owner)
        await self._checksums(env, client, dry_run=dry_run)
        return await self.database.run(lambda s: public_view(db_envs.to_api(db_envs.add_environment(s, env, owner))),
                                       dry_run=dry_run)

    async def list(self, identity: Identity, username: str | None, name: str | None, version: int | None,
                   last: bool) -> list[dict[str, Any]]:
        users = [username] if username else None
        check_version(version)
        rows = await self.database.run(lambda s: db_envs.find_environments(
            s, name=name, users=users, version=version, last=last, name_like=name is not None and "%" in name))
        return [public_view(db_envs.to_api(r)) for r in rows if _visible(r, identity, owner_named=bool(username))]

    async def lookup(self, identity: Identity, name: str, user: str | None, version: int | None) -> dict[str, Any]:
        """The environment a deployment names: the owner's if given, else own then public; last version."""
        check_version(version)
        def work(session):  # type: ignore[no-untyped-def]
            if user:
                rows = db_envs.find_environments(session, name=name, users=[user], version=version, last=True)
                return [r for r in rows if _visible(r, identity, owner_named=True)]
            own = db_envs.find_environments(session, name=name, users=[identity.user], version=version, last=True)
            if own:
                return own
            rows = db_envs.find_environments(session, name=name, version=version, last=True)
            return [r for r in rows if r.visibility == "public"]

        rows = await self.database.run(work)
        if not rows:
            owner = f" of user {user}" if user else ""
            which = f" version {version}" if version is not None else ""
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT,
                                f"The environment {name!r}{which}{owner} does not exist or is not visible to you")
        rows.sort(key=lambda r: r.version, reverse=True)
        return db_envs.to_api(rows[0])

    async def modify(self, identity: Identity, user: str, name: str, version: int | None,
                     params: dict[str, Any], client: str | None, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """PUT /environments/:user/:name[/:version]: visibility, destructive toggle or checksum updates.

        A dry run answers the environments as they would become, checksums
        left as they are (their files are only checked, not fetched).
        """
        from kadeploy.server.http import as_bool, as_str

        visibility = as_str(params, "visibility")
        toggle = as_bool(params, "toggle_destructive") if "toggle_destructive" in params else False
        updates = tuple(field for field, key in (("image", "update_image_checksum"),
                                                 ("preinstall", "update_preinstall_checksum"),
                                                 ("postinstalls", "update_postinstalls_checksum"))
                        if key in params and as_bool(params, key))
        if visibility is None and not toggle and not updates:
            raise KadeployError(ErrorCode.MISSING_OPTION, "Nothing to modify: give visibility, toggle_destructive "
                                                          "or an update_*_checksum parameter")
        if visibility is not None and visibility not in VISIBILITIES:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid visibility {visibility!r}")
        self._check_public(visibility, user)
        last = as_bool(params, "last") if "last" in params else version is None
        new_files: dict[int, dict[str, Any]] = {}
        if updates:
            rows = await self.database.run(lambda s: self._rows_sync(identity, user, name, version, last, s))
            for row in rows:
                env = db_envs.to_api(row)
                await self._checksums(env, client, updates, dry_run=dry_run)
                if not dry_run:
                    new_files[row.id] = env

        def work(session):  # type: ignore[no-untyped-def]
            rows = self._rows_sync(identity, user, name, version, last, session)
            for row in rows:
                if visibility is not None:
                    row.visibility = visibility
                if toggle:
                    row.destructive = not row.destructive
                env = new_files.get(row.id)
                if env is not None:
                    for field in updates:
                        db_envs.update_fields(row, **{field: env.get(field)})
            session.flush()
            return [public_view(db_envs.to_api(r)) for r in rows]

        return await self.database.run(work, dry_run=dry_run)

    def _rows_sync(self, identity: Identity, user: str, name: str, version: int | None, last: bool,
                   session: Any) -> list[Any]:
        if user != identity.user and not identity.admin:
            raise HTTPProblem(403, "Only administrators are allowed to modify or delete other users' environments")
        rows = db_envs.find_environments(session, name=name, users=[user], version=version,
                                         last=last and version is None)
        if not rows:
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT,
                                f"The environment {name!r} of user {user!r} does not exist")
        return rows

    async def delete(self, identity: Identity, user: str, name: str, version: int | None,
                     last: bool, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """The deleted environments (a dry run: those that would be deleted)."""
        def work(session):  # type: ignore[no-untyped-def]
            rows = self._rows_sync(identity, user, name, version, last, session)
            result = [public_view(db_envs.to_api(r)) for r in rows]
            for row in rows:
                session.delete(row)
            return result

        return await self.database.run(work, dry_run=dry_run)

    async def move_files(self, identity: Identity, user: str | None, moves: dict[str, str], *,
                         dry_run: bool = False) -> list[dict[str, Any]]:
        """PUT /environments[/:user] update_files: rewrite file path prefixes (admins only)."""
        if not identity.admin:
            raise HTTPProblem(403, "Only administrators can move the files in the environments")

        def rewrite(path: str) -> str:
            for old, new in moves.items():
                if path.startswith(old):
                    return new + path[len(old):]
            return path

        def work(session):  # type: ignore[no-untyped-def]
            rows = db_envs.find_environments(session, users=[user] if user else None)
            changed = []
            for row in rows:
                image = dict(row.image)
                new_image = {**image, "file": rewrite(image.get("file", ""))}
                pre = dict(row.preinstall) if row.preinstall else None
                new_pre = {**pre, "archive": rewrite(pre.get("archive", ""))} if pre else None
                posts = [dict(p) for p in row.postinstalls or []]
                new_posts = [{**p, "archive": rewrite(p.get("archive", ""))} for p in posts]
                if (new_image, new_pre, new_posts) != (image, pre, posts):
                    db_envs.update_fields(row, image=new_image, preinstall=new_pre, postinstalls=new_posts)
                    changed.append(row)
            if not changed:
                raise KadeployError(ErrorCode.NOTHING_MODIFIED, "No environment file matches these prefixes")
            session.flush()
            return [public_view(db_envs.to_api(r)) for r in changed]

        return await self.database.run(work, dry_run=dry_run)


def _file_references(env: dict[str, Any], fields: tuple[str, ...]) -> list[tuple[dict[str, Any], str, str]]:
    """(holder, key, what) of each file of `fields` in `env`: `holder[key]` is the reference, its md5 beside it."""
    found: list[tuple[dict[str, Any], str, str]] = []
    if "image" in fields and (env.get("image") or {}).get("file"):
        found.append((env["image"], "file", "image"))
    if "preinstall" in fields and (env.get("preinstall") or {}).get("archive"):
        found.append((env["preinstall"], "archive", "preinstall"))
    if "postinstalls" in fields:
        found += [(post, "archive", "postinstall") for post in env.get("postinstalls") or [] if post.get("archive")]
    return found
