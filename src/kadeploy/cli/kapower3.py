"""kapower3: power nodes on or off, or ask their power status (reference 2.6).

CLI room. `--on/--off` → `PUT /power {status, level}`; `--status` →
`GET /power?nodes=...` which starts a status workflow; its result lines are
`<node>: <stdout of the power_status command>`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    add_workflow_options,
    new_parser,
    run_tool,
    workflow_params,
    workflow_tool,
)
from kadeploy.client.output import power_status_lines
from kadeploy.client.run import WorkflowRequest

OPERATION = "Power operation"


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kapower3", "Power nodes on, off, or get their power status")
    add_generic_options(parser)
    add_workflow_options(parser)
    group = parser.add_argument_group("Power options")
    group.add_argument("-l", "--op-level", choices=("soft", "hard", "very_hard"), metavar="VALUE",
                       help="Operation's level (soft, hard, very_hard)")
    group.add_argument("--on", action="store_const", const="on", dest="operation", help="Power on the nodes")
    group.add_argument("--off", action="store_const", const="off", dest="operation", help="Power off the nodes")
    group.add_argument("--status", action="store_const", const="status", dest="operation",
                       help="Get the power status of the nodes")
    return parser


def _status_result(operation: str, info: Mapping[str, Any], states: Mapping[str, Any]) -> list[str]:
    return power_status_lines(states)


def build_request(args: argparse.Namespace) -> WorkflowRequest:
    if args.operation is None:
        raise OptionError("You must choose an operation (--on, --off or --status)")
    params, local_files = workflow_params(args)
    if args.operation == "status":
        return WorkflowRequest(OPERATION, "GET", "/power", params, local_files, formatter=_status_result)
    params["status"] = args.operation
    if args.op_level:
        params["level"] = args.op_level
    return WorkflowRequest(OPERATION, "PUT", "/power", params, local_files)


def body(argv: Sequence[str]) -> int:
    return workflow_tool(argv, build_parser(), build_request)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
