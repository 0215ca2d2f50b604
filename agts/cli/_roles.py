"""``agts roles create``: least-privilege reader, writer and admin group roles."""

from __future__ import annotations

import argparse
from typing import Any

from agts._roles import create_roles, grant_role
from agts.cli._common import UsageError, add_json_flag, engine_from_args, print_json, require_schema


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "roles", help="create the reader / writer / admin roles and grant them",
        description="Create (idempotently) the group roles <prefix>_reader, <prefix>_writer and "
                    "<prefix>_admin with their grants on this database; optionally grant one to "
                    "a login role. Run as a superuser or the schema owner.",
        epilog="Examples:\n  agts roles create\n  agts roles create --grant reader --to alice",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["create"])
    parser.add_argument("--prefix", default="agts", help="role name prefix (default: agts)")
    parser.add_argument("--grant", choices=["reader", "writer", "admin"],
                        help="also grant this role to --to")
    parser.add_argument("--to", metavar="LOGIN", help="login role that receives --grant")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.grant) != bool(args.to):
        given, missing = ("--grant", "--to") if args.grant else ("--to", "--grant")
        raise UsageError(f"{given} needs {missing}: --grant ROLE --to LOGIN go together")
    with engine_from_args(args) as engine:
        require_schema(engine)
        names = create_roles(engine, prefix=args.prefix)
        if args.grant:
            grant_role(engine, getattr(names, args.grant), to=args.to)
    if args.json:
        print_json(names)
    else:
        print(f"roles ready: {names.reader}, {names.writer}, {names.admin}")
        if args.grant:
            print(f"granted {getattr(names, args.grant)} to {args.to}")
    return 0
