"""``aliak acl ...``: network access policies of an account or one key (spec §6)."""

from __future__ import annotations

import argparse

from aliak.acl import NetworkPolicy
from aliak.cli._console import Console
from aliak.cli._keys import check_new_account_id, manager
from aliak.cli._store import open_admin_store

__all__ = ["add_acl_commands"]


def _vpc_rule(text: str) -> tuple[str, str]:
    """``VPC_ID=CIDR,CIDR`` (argparse type: a malformed rule is a usage error)."""
    vpc_id, equals, entries = text.partition("=")
    if not equals or not vpc_id.strip():
        raise argparse.ArgumentTypeError(f"expected VPC_ID=CIDR,CIDR, got {text!r}")
    return vpc_id.strip(), entries


def _target(args: argparse.Namespace) -> dict[str, str | None]:
    return {"account_id": args.account, "access_key_id": args.key}


def _target_record(args: argparse.Namespace) -> dict[str, object]:
    if args.key is not None:
        return {"Level": "key", "Id": args.key}
    return {"Level": "account", "Id": args.account}


def _policy_from(args: argparse.Namespace) -> NetworkPolicy | None:
    changes_policy = args.public is not None or args.vpc or args.disabled
    if args.clear:
        if changes_policy:
            args.subparser.error("--clear detaches the policy: give no --public/--vpc/--disabled")
        return None
    if not (args.public is not None or args.vpc):
        args.subparser.error(
            "give --public and/or --vpc (--public '' denies all public traffic), or --clear"
        )
    vpcs: dict[str, str] = {}
    for vpc_id, entries in args.vpc or ():
        if vpc_id in vpcs:
            args.subparser.error(f"--vpc names {vpc_id} twice; list its blocks in one --vpc")
        vpcs[vpc_id] = entries
    return NetworkPolicy(public=args.public, vpcs=vpcs, enabled=not args.disabled)


def _show_policy(console: Console, target: dict[str, object], policy: NetworkPolicy | None) -> None:
    if console.json_output:
        console.json({**target, "Policy": None if policy is None else policy.to_dict()})
        return
    if policy is None:
        console.fields({**target, "Policy": "none attached"})
        return
    public: object = list(policy.public) if policy.public else "none: public traffic denied"
    vpcs = {f"VPC {vpc_id}": list(entries) for vpc_id, entries in policy.vpcs}
    console.fields({**target, "Enabled": policy.enabled, "Public": public, **vpcs})


def _set(args: argparse.Namespace, console: Console) -> int:
    policy = _policy_from(args)
    if args.account is not None:
        check_new_account_id(args.account)  # before a store can be created for it
    # An account's policy may come before its keys; a key's needs the key's store.
    with open_admin_store(args.db, may_create=args.account is not None) as store:
        keys = manager(store, args)
        keys.set_network_policy(policy, **_target(args))
        stored = keys.get_network_policy(**_target(args))
    if not console.json_output:
        console.note("network policy detached" if policy is None else "network policy set")
    _show_policy(console, _target_record(args), stored)
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    with open_admin_store(args.db) as store:
        policy = manager(store, args).get_network_policy(**_target(args))
    _show_policy(console, _target_record(args), policy)
    return 0


def _target_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--account", metavar="ID", help="the account-level policy")
    target.add_argument(
        "--key", metavar="ID", help="one key's policy (it replaces the account's when enabled)"
    )


def add_acl_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    acl = commands.add_parser(
        "acl",
        help="network access policies (source-IP restriction)",
        description="Network access policies of an account or one AccessKey.",
    )
    sub = acl.add_subparsers(dest="acl_command", metavar="COMMAND", required=True)
    set_policy = sub.add_parser(
        "set",
        parents=[common],
        help="attach a policy (replacing any), or detach it with --clear",
        description="Attach a network policy to an account or a key, replacing any; "
        "--clear detaches it. Verifiers apply the change within their freshness.",
    )
    _target_options(set_policy)
    set_policy.add_argument(
        "--public",
        metavar="CIDRS",
        help="public-network addresses or CIDR blocks, separated by spaces or commas",
    )
    set_policy.add_argument(
        "--vpc",
        action="append",
        type=_vpc_rule,
        metavar="VPC_ID=CIDRS",
        help="addresses or CIDR blocks allowed inside a VPC (repeatable; AllowAllVPC=... "
        "for any VPC)",
    )
    set_policy.add_argument(
        "--disabled", action="store_true", help="keep the policy but do not apply it"
    )
    set_policy.add_argument("--clear", action="store_true", help="detach the policy")
    set_policy.set_defaults(run=_set, subparser=set_policy)
    show = sub.add_parser("show", parents=[common], help="show the policy attached")
    _target_options(show)
    show.set_defaults(run=_show)
