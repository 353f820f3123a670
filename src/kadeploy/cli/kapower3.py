"""kapower3: power nodes on or off, or ask their power status (reference 2.6).

CLI room. `--on/--off` → `PUT /power {status, level}`; `--status` →
`GET /power?nodes=...` which starts a status workflow. Kadeploy3's kapower3
has no result of its own (bin/kapower3 keeps ClientWorkflow#result): the
`<node>: <stdout of power_status>` lines come in the workflow's log from the
server, then the common result block (`The power operation is successful on
nodes`...) follows, as for `--on` and `--off`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    add_workflow_options,
    new_parser,
    run_tool,
    workflow_params,
    workflow_tool,
)
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


def build_request(args: argparse.Namespace) -> WorkflowRequest:
    """bin/kapower3 `check_options` (its messages) then `prepare`."""
    if args.operation is None:
        raise OptionError("No operation is chosen")
    if args.op_level and args.operation == "status":
        raise OptionError("Specifying the level is useless with the status operation")
    params, local_files = workflow_params(args)
    if args.operation == "status":
        return WorkflowRequest(OPERATION, "GET", "/power", params, local_files)
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
