"""Dry runs: the `dry_run` parameter of every request (room `server`; reference 1.3, 2.1 `--dry-run`).

Kadeploy3's server parses a request, checks its parameters and the user's
rights, and for a dry run skips the treatment and answers an empty 200,
whatever the request; its clients send `dry_run` with the request of every
tool and print nothing back.

Ours goes as far as the real request goes without changing anything, so that
a dry run fails where and how the real request would:

* what the database would refuse is tried in a transaction that is rolled
  back (`Database.run(..., dry_run=True)`): an environment that already
  exists, rights already set or nothing to delete, every node held by
  another operation;
* files are checked, not fetched (`FileFetcher.check`): a `server://` file
  must exist within the allowed directories, a URL or a client file must
  answer HEAD with 200; nothing enters the cache and no checksum is
  computed. A deployment's files are fetched by its workflow, which a dry
  run does not start: they are not checked;
* no workflow is started or cancelled, no console opened or closed, no log
  line is marked read, and a dry removal of rights stops nobody's operation.

The answer is a mapping with `"dry_run": true` and what the real request
would have done:

| request | keys besides `dry_run` |
|---|---|
| POST /deployment, POST /reboot, PUT /power, GET /power?nodes= | `nodes` it would run on, `discarded` (held by other operations), `environment` (user, name, version) when one is deployed |
| DELETE /%OP/:wid | `wid`, `running` (true: it would be cancelled; false: only forgotten) |
| POST /console | `node`; DELETE /console/:wid: `wid` |
| POST /environments | `environment` as it would be recorded |
| PUT /environments... | `environments` as they would become (checksums unchanged) |
| DELETE /environments/... | `environments` that would be deleted |
| POST /rights | `rights` that would be added |
| DELETE /rights/... | `user`, `nodes`, `partitions`, and `cancelled`: the operations the removal would stop |

Reads (GET of lists, states, statistics...) change nothing and answer what
they answer for real.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kadeploy.server.http import as_bool, render

PARAMETER = "dry_run"


def requested(params: dict[str, Any]) -> bool:
    """Whether the request is a dry run (JSON `true`, or `true`/`1`/empty in a query string)."""
    return as_bool(params, PARAMETER)


def answer(request: Request, **would: Any) -> Response:
    """The answer to a dry run: `{"dry_run": true, ...}` with what the real request would have done."""
    return render(request, {PARAMETER: True, **would})
