"""/stats: deployment statistics (kastat3): records as gzip CSV, failure rates, step durations."""

from __future__ import annotations

import email.utils
import gzip
import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from kadeploy.db import stats as db_stats
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.server.http import HTTPProblem, as_int, as_list, as_str, read_params, render
from kadeploy.server.nodelists import STATS_FLOOR, expand_for_site
from kadeploy.server.routes.dependencies import Caller, Context

router = APIRouter()

MAX_EPOCH = 2.0 ** 31  # the records' start column is a 32-bit integer in MySQL and PostgreSQL


def parse_date(params: dict[str, Any], key: str) -> float | None:
    """An epoch or an RFC 2616 date, as kastat3 sends `date_min`/`date_max`; error 4 otherwise."""
    value = as_str(params, key)
    if value is None:
        return None
    try:
        epoch = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(epoch) or abs(epoch) > MAX_EPOCH:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid date for {key}: {value!r} is out of range")
        return epoch
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid date for {key}: {value!r} (RFC 2616 date "
                                                      "or epoch expected)") from None


def csv_value(value: Any, field: str = "") -> str:
    """One value as MySQL's CONCAT_WS writes it (booleans as true/false, the error's `"` as `\\"`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if field == "error" and isinstance(value, str):
        return value.replace('"', '\\"')
    return "" if value is None else str(value)


@router.get("/stats", summary="Statistics")
@router.get("/stats/{operation}", summary="Statistics of one operation kind")
async def stats_get(request: Request, ctx: Context, who: Caller, operation: str | None = None) -> Response:
    database = ctx.database
    params = await read_params(request)
    step_retries = [as_int({"s": s}, "s") or 0 for s in (as_list(params, "step_retries") or ["1", "2", "3"])]
    nodes = expand_for_site(ctx.settings.node_cluster, as_list(params, "nodes") or [], STATS_FLOOR)
    flt = db_stats.StatsFilter(operation=operation, nodes=nodes or None,
                               wid=as_str(params, "wid"), date_min=parse_date(params, "date_min"),
                               date_max=parse_date(params, "date_max"),
                               min_retries=as_int(params, "min_retries", minimum=0), step_retries=step_retries)
    kind = as_str(params, "kind", "all")
    if kind == "failure_rates":
        rate = params.get("min_failure_rate")
        try:
            min_rate = float(rate) if rate not in (None, "") else None
        except (TypeError, ValueError):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid min_failure_rate {rate!r}") from None
        if min_rate is not None and not 0 <= min_rate <= 1:
            raise KadeployError(ErrorCode.INVALID_OPTION, "min_failure_rate must be between 0 and 1")
        return render(request, await database.run(lambda s: db_stats.failure_rates(s, flt, min_rate)))
    if kind == "steps":  # beyond Kadeploy3: kastat3 --steps
        return render(request, await database.run(lambda s: db_stats.step_durations(s, flt)))
    if kind != "all":
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid kind {kind!r} (all, failure_rates, steps)")
    if "gzip" not in request.headers.get("accept-encoding", ""):
        raise HTTPProblem(406, "The statistics are sent gzip-compressed: send Accept-Encoding: gzip")
    fields = as_list(params, "fields") or list(db_stats.DEFAULT_FIELDS)
    sort = as_list(params, "sort") or ["start"]
    limit = as_int(params, "limit", minimum=1)
    rows = await database.run(lambda s: db_stats.query_records(s, flt, fields, sort, limit))
    # every record of the site may be asked for: joined and compressed off the event loop
    body = await run_in_threadpool(csv_gzip, rows, fields)
    return Response(body, media_type="text/csv", headers={"Content-Encoding": "gzip"})


def csv_gzip(rows: list[list[Any]], fields: list[str]) -> bytes:
    """Kadeploy3's lines, gzip-compressed.

    They are MySQL's CONCAT_WS(',', fields...) (server/stats.rb `list_all`): values joined as
    they are, never quoted, and the error with its " stored as \\" (server/debug.rb).
    """
    text = "".join(",".join(csv_value(value, name) for value, name in zip(row, fields)) + "\n"
                   for row in rows)
    return gzip.compress(text.encode())
