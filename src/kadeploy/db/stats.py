"""Statistics records (`log` table) and kastat3 queries (room `db`, reference section 8)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from kadeploy.db.models import LogRow
from kadeploy.errors import ErrorCode, KadeployError

FIELDS = ("wid", "user", "hostname", "step1", "step2", "step3", "timeout_step1", "timeout_step2", "timeout_step3",
          "retry_step1", "retry_step2", "retry_step3", "start", "step1_duration", "step2_duration", "step3_duration",
          "env", "anonymous_env", "md5", "digest", "success", "error")
DEFAULT_FIELDS = ("wid", "user", "hostname", "step1", "step2", "step3", "timeout_step1", "timeout_step2",
                  "timeout_step3", "retry_step1", "retry_step2", "retry_step3", "start", "step1_duration",
                  "step2_duration", "step3_duration", "env", "md5", "success", "error")
_OPERATION_PREFIX = {"deploy": "D-", "reboot": "R-", "power": "P-"}


@dataclass
class StatsFilter:
    """kastat3 filters (all optional)."""

    operation: str | None = None
    nodes: list[str] | None = None
    wid: str | None = None
    date_min: float | None = None
    date_max: float | None = None
    min_retries: int | None = None
    step_retries: list[int] = field(default_factory=lambda: [1, 2, 3])


def add_records(session: Session, records: Iterable[dict[str, Any]]) -> None:
    """Insert stats rows (one per node per operation); keys are `FIELDS` names, plus `micro_steps`."""
    session.add_all(LogRow(**{k: v for k, v in record.items() if k in FIELDS or k == "micro_steps"})
                    for record in records)


def _filtered(flt: StatsFilter):
    statement = select(LogRow)
    if flt.operation:
        prefix = _OPERATION_PREFIX.get(flt.operation)
        if prefix is None:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid operation {flt.operation!r} (deploy, reboot, power)")
        statement = statement.where(LogRow.wid.like(prefix + "%"))
    if flt.nodes:
        statement = statement.where(LogRow.hostname.in_(flt.nodes))
    if flt.wid:
        statement = statement.where(LogRow.wid == flt.wid)
    if flt.date_min is not None:
        statement = statement.where(LogRow.start >= flt.date_min)
    if flt.date_max is not None:
        statement = statement.where(LogRow.start <= flt.date_max)
    if flt.min_retries is not None:
        for step in flt.step_retries:
            if step not in (1, 2, 3):
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid step {step} in step_retries (1, 2 or 3)")
        statement = statement.where(or_(*[getattr(LogRow, f"retry_step{s}") >= flt.min_retries
                                          for s in flt.step_retries]))
    return statement


def query_records(session: Session, flt: StatsFilter, fields: Sequence[str] = DEFAULT_FIELDS,
                  sort: Sequence[str] = ("start",), limit: int | None = None) -> list[list[Any]]:
    """Rows as lists of values in `fields` order, sorted by `sort`."""
    for name in list(fields) + list(sort):
        if name not in FIELDS:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid field {name!r}; valid fields: {', '.join(FIELDS)}")
    statement = _filtered(flt).order_by(*[getattr(LogRow, name) for name in sort], LogRow.id)
    if limit is not None:
        statement = statement.limit(limit)
    return [[getattr(row, name) for name in fields] for row in session.scalars(statement)]


def failure_rates(session: Session, flt: StatsFilter, min_failure_rate: float | None = None) -> dict[str, float]:
    """{hostname: 1 - successes/total} over the filtered rows, rounded to 3 decimals."""
    totals: dict[str, list[int]] = {}
    for hostname, success in session.execute(_filtered(flt).with_only_columns(LogRow.hostname, LogRow.success)):
        counts = totals.setdefault(hostname, [0, 0])
        counts[0] += 1
        counts[1] += 1 if success else 0
    # by hostname, as Kadeploy3's GROUP BY hostname returned them (server/stats.rb `list_failure_rates`)
    rates = {host: round(1 - ok / total, 3) for host, (total, ok) in sorted(totals.items())}
    if min_failure_rate is not None:
        rates = {host: rate for host, rate in rates.items() if rate >= min_failure_rate}
    return rates


def summarize(values: Sequence[float]) -> dict[str, float]:
    """count, median, p90 (nearest rank: a duration 90 % of the runs did not exceed) and max."""
    ordered = sorted(values)
    count = len(ordered)
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    p90 = ordered[max(math.ceil(0.9 * count) - 1, 0)]
    return {"count": count, "median": round(median, 3), "p90": round(p90, 3), "max": round(ordered[-1], 3)}


def step_durations(session: Session, flt: StatsFilter) -> dict[str, dict[str, dict[str, float]]]:
    """Duration statistics over the filtered records (`kastat3 --steps`).

    `macro`: per macro-step implementation, from `stepN`/`stepN_duration`
    (one value per node); `micro`: per `implementation/micro-step`, from the
    recorded micro-step durations (one value per node and run of the step).
    """
    macro: dict[str, list[float]] = {}
    micro: dict[str, list[float]] = {}
    for row in session.scalars(_filtered(flt).order_by(LogRow.start, LogRow.id)):
        for index in (1, 2, 3):
            name = getattr(row, f"step{index}")
            if name:
                macro.setdefault(name, []).append(float(getattr(row, f"step{index}_duration") or 0))
        for entry in row.micro_steps or []:
            try:
                implementation, step, seconds = entry
                micro.setdefault(f"{implementation}/{step}", []).append(float(seconds))
            except (TypeError, ValueError):
                continue  # a malformed entry must not hide the others
    return {"macro": {name: summarize(values) for name, values in macro.items()},
            "micro": {name: summarize(values) for name, values in micro.items()}}
