"""kastat3: statistics of past operations (reference 2.7, 8).

CLI room. `-a` prints the server's CSV lines (no header, fields in `-F`
order); `-b [RATE]` prints `host: rate` failure rates. Beyond Kadeploy3:
`--steps` prints per macro-step and micro-step duration statistics (count,
median, p90, max) over the selected records and `--plot FILE.png` draws them
(see `kadeploy.cli.stepstats`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kadeploy.cli import printing, rubytime
from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    add_node_options,
    new_parser,
    nodes_from_args,
    open_session,
    parse_or_finish,
    run_tool,
    with_dry_run,
)
from kadeploy.cli.optionparser import accept, ruby_pattern

FIELDS = (
    "wid", "user", "hostname", "step1", "step2", "step3", "timeout_step1", "timeout_step2", "timeout_step3",
    "retry_step1", "retry_step2", "retry_step3", "start", "step1_duration", "step2_duration", "step3_duration",
    "env", "md5", "success", "error", "anonymous_env", "digest",
)
OPERATIONS = ("deploy", "reboot", "power")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kastat3", "Statistics of past deployments, reboots and power operations")
    add_generic_options(parser)
    add_node_options(parser)
    group = parser.add_argument_group("kastat3 options")
    # -a and -b both set bin/kastat3's options[:kind]: the last one given wins
    group.add_argument("-a", "--all", action="store_const", const="all", dest="kind",
                       help="Print all the records (default)")
    # bin/kastat3's patterns and classes, checked as OptionParser checks them (optionparser.accept)
    accept(group.add_argument("-b", "--failure-rate", action=_FailureRate, nargs="?", const="", default=None,
                              metavar="RATE",
                              help="Print the failure rate of nodes (only those >= RATE, 0..1, if given)"),
           ruby_pattern(r"^0?\.\d+|1(?:\.0)?$"))
    group.add_argument("-F", "--fields", metavar="FIELDS", help=f"Fields to print, among {','.join(FIELDS)}")
    group.add_argument("-o", "--operation", choices=OPERATIONS, metavar="OPERATION",
                       help="Only this kind of operation (deploy, reboot, power)")
    accept(group.add_argument("-r", "--min-retries", metavar="NB", help="Records needing at least NB retries"),
           ruby_pattern(r"^\d+$"))
    group.add_argument("-s", "--retry-steps", metavar="STEPS", help="Steps considered by -r (1,2,3)")
    group.add_argument("-w", "--workflow-id", metavar="ID", help="Only this workflow")
    accept(group.add_argument("-x", "--date-min", metavar="TIME",
                              help="Records started after TIME (yyyy-mm-dd hh:mm:ss)"), rubytime.http_date)
    accept(group.add_argument("-y", "--date-max", metavar="TIME",
                              help="Records started before TIME (yyyy-mm-dd hh:mm:ss)"), rubytime.http_date)
    accept(group.add_argument("--limit", metavar="N", help="Print at most N records"), ruby_pattern(r"^\d+$"))
    group.add_argument("--sort", metavar="FIELDS", help="Sort by these fields (default start)")
    group.add_argument("--steps", action="store_true",
                       help="Duration statistics (count, median, p90, max) per macro-step and micro-step")
    group.add_argument("--plot", metavar="FILE", help="Draw the --steps statistics into a PNG file")
    return parser


class _FailureRate(argparse.Action):
    """-b [RATE]: `options[:kind] = :failure_rates`, and the rate when one is given."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.kind = "failure_rates"
        if values:
            namespace.failure_rate = values
        elif namespace.failure_rate is None:
            namespace.failure_rate = ""


def _chosen_fields(text: str) -> list[str]:
    """-F as bin/kastat3: OptionParser's `Array` (split on `,`), then `check_options`'s
    `error("Invalid field(s) #{(fields - (FIELDS & fields)).join(', ')}")`."""
    fields = text.split(",")
    invalid = [field for field in fields if field not in FIELDS]
    if invalid:
        raise OptionError(f"Invalid field(s) {', '.join(invalid)}")
    return fields


def _field_list(text: str, option: str) -> list[str]:
    fields = [field.strip() for field in text.split(",") if field.strip()]
    for field in fields:
        if field not in FIELDS:
            raise OptionError(f"Invalid field '{field}' for {option} (allowed: {','.join(FIELDS)})")
    return fields


def build_query(args: argparse.Namespace, nodes: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Path and query of `GET /stats[/operation]` for the options."""
    steps = args.steps or bool(args.plot)
    if steps and (args.kind or args.failure_rate is not None or args.fields or args.sort or args.limit):
        raise OptionError("--steps/--plot cannot be used with -a, -b, -F, --sort or --limit")
    kind = "steps" if steps else args.kind or "all"
    params: dict[str, Any] = {"kind": kind}
    if args.failure_rate:  # its pattern was checked while parsing
        params["min_failure_rate"] = float(args.failure_rate)
    if nodes:
        params["nodes"] = list(nodes)
    if args.fields:
        params["fields"] = _chosen_fields(args.fields)
    if args.sort:
        params["sort"] = _field_list(args.sort, "--sort")
    for value, key in ((args.limit, "limit"), (args.min_retries, "min_retries")):
        if value is not None:  # /^\d+$/, checked while parsing
            params[key] = int(value)
    if args.retry_steps:
        steps = args.retry_steps.split(",")
        if any(step not in ("1", "2", "3") for step in steps):
            raise OptionError(f"Invalid steps '{args.retry_steps}' for -s (1,2,3)")
        params["step_retries"] = [int(step) for step in steps]
    if args.workflow_id:
        params["wid"] = args.workflow_id
    if args.date_min:  # already Time#httpdate (rubytime.http_date, while parsing)
        params["date_min"] = args.date_min
    if args.date_max:
        params["date_max"] = args.date_max
    path = "/stats" + (f"/{args.operation}" if args.operation else "")
    return path, params


def failure_rate_lines(rates: dict[str, Any]) -> list[str]:
    """bin/kastat3 `result`: `debug "#{host}: #{rate}"` per node, in the server's order."""
    return [f"{host}: {printing.ruby_to_s(rate)}" for host, rate in rates.items()]


def result_text(answer: Any, name: str | None = None) -> str:
    """What bin/kastat3 `result` prints for one server's answer: failure rates, or the CSV as is
    (`debug ret unless ret.empty?`), each line prefixed `[name] ` in the multi-server mode."""
    if isinstance(answer, dict):
        return "".join(printing.debug(line, name) for line in failure_rate_lines(answer))
    if not answer:
        return ""
    return printing.debug(str(answer), name)


def print_steps(generic: Any, path: str, params: dict[str, Any], plot: str | None) -> int:
    """`--steps`: the tables of each server; `--plot`: one picture (of the first server's selection).

    A dry run prints and draws nothing, as for the other kastat3 listings.
    """
    from pathlib import Path

    from kadeploy.cli.stepstats import plot_steps, step_table

    with open_session(generic) as session:
        for index, connection in enumerate(session.connections):
            answer = connection.get(path, with_dry_run(params, generic))
            if generic.dry_run:
                continue
            stats = answer if isinstance(answer, dict) else {}
            name = connection.server.name if session.multi else None
            print(printing.debug("\n".join(step_table(stats)), name), end="")
            if plot and index == 0:
                plot_steps(stats, Path(plot))
    return 0


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:
        return 0
    args, generic = parsed
    nodes = nodes_from_args(args)
    path, params = build_query(args, nodes)
    if params["kind"] == "steps":
        return print_steps(generic, path, params, args.plot)
    with open_session(generic) as session:
        for connection in session.connections:
            answer = connection.get(path, with_dry_run(params, generic))
            if generic.dry_run:
                continue  # Kadeploy3 prints nothing back from a dry run
            name = connection.server.name if session.multi else None
            print(result_text(answer, name), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
