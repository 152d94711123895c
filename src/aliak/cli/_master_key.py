"""``aliak master-key ...``: the keyring that seals every stored secret.

``rotate`` adds a master-key version and re-seals every secret under it, one by one
(compare-and-set), while verifiers keep running. Where the new keyring goes depends on
where the keyring lives:

- a SQLite store's key file (``<db>.key``, mode 0600): rewritten in place, atomically;
  verifiers reading it pick the new version up;
- ``$ALIAK_MASTER_KEY`` (always for PostgreSQL, where a fleet shares one keyring): this
  process cannot change the environment of the others, so ``--keyring-out FILE`` is
  required, and the new keyring is written there (created, mode 0600) *before* anything
  is sealed under it; give it to every server as ``ALIAK_MASTER_KEY``.

``generate --out FILE`` writes a new keyring, for a new PostgreSQL store.

No key material is ever printed: only versions, counts and file names.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aliak.cli._console import CommandFailed, Console
from aliak.cli._keys import manager
from aliak.cli._store import is_postgres_location, open_admin_store
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring
from aliak.storage.sqlite import KEY_FILE_SUFFIX

__all__ = ["add_master_key_commands"]


def _check_new_file(path: Path, option: str) -> None:
    """Refuse, before any store is opened, a file that exists or a missing directory."""
    directory = path.absolute().parent
    if not directory.is_dir():
        raise CommandFailed(f"{option} {path}: the directory {directory} does not exist")
    if path.exists() or path.is_symlink():
        raise CommandFailed(
            f"{option} {path}: the file exists; give a new file name (a keyring is never "
            "overwritten)"
        )


def _write_new_keyring(path: Path, keyring: MasterKeyring) -> None:
    """Create ``path`` (never replacing a file), mode 0600, holding ``keyring``; synced
    to disk before this returns."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandFailed(f"{path}: the file exists; give a new file name") from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(keyring.to_text())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _keyring_in_environment(location: str) -> bool:
    """Whether the store's keyring comes from ``$ALIAK_MASTER_KEY`` (it always does for
    PostgreSQL; a SQLite store prefers it to its key file)."""
    return is_postgres_location(location) or bool(os.environ.get(ENV_MASTER_KEY))


def _rotate(args: argparse.Namespace, console: Console) -> int:
    from_environment = _keyring_in_environment(args.db)
    out = None if args.keyring_out is None else Path(args.keyring_out)
    if from_environment and out is None:
        raise CommandFailed(
            f"this store's master key comes from {ENV_MASTER_KEY}, which this command cannot "
            "change for the other servers: give --keyring-out FILE to receive the new keyring "
            f"(mode 0600), then set {ENV_MASTER_KEY} to it on every server of the store"
        )
    if not from_environment and out is not None:
        raise CommandFailed(
            f"this store's master key is in its key file {args.db}{KEY_FILE_SUFFIX}, which "
            "receives the new keyring; --keyring-out is for a keyring from "
            f"{ENV_MASTER_KEY}"
        )
    if out is not None:
        _check_new_file(out, "--keyring-out")
    with open_admin_store(args.db) as store:
        keys = manager(store, args)
        if out is not None:
            new = store.reload_keyring().with_new_key()
            _write_new_keyring(out, new)  # saved before anything is sealed under it
            resealed = keys.rotate_master_key(new)
        else:
            resealed = keys.rotate_master_key()  # the key file is rewritten first
        version = store.keyring.current_version
    where = f"{args.db}{KEY_FILE_SUFFIX}" if out is None else str(out)
    if console.json_output:
        console.json(
            {
                "Resealed": resealed,
                "CurrentVersion": version,
                "KeyringFile": where,
                "KeyringSource": ENV_MASTER_KEY if from_environment else "key file",
            }
        )
        return 0
    secrets = "1 secret" if resealed == 1 else f"{resealed} secrets"
    console.line(f"re-sealed {secrets} under master key version {version}")
    if out is None:
        console.note(f"the new keyring is in the key file {where}; verifiers reading it pick it up")
    else:
        console.note(
            f"the new keyring is in {where} (mode 0600): set {ENV_MASTER_KEY} to its contents "
            "on every server of this store now (they cannot open the re-sealed secrets "
            "without it), then delete the file"
        )
        key_file = Path(f"{args.db}{KEY_FILE_SUFFIX}")
        if not is_postgres_location(args.db) and key_file.exists():
            console.note(f"{key_file} still holds the old keyring: replace it with {where}")
    return 0


def _generate(args: argparse.Namespace, console: Console) -> int:
    out = Path(args.out)
    _check_new_file(out, "--out")
    keyring = MasterKeyring.generate()
    _write_new_keyring(out, keyring)
    if console.json_output:
        console.json({"KeyringFile": str(out), "CurrentVersion": keyring.current_version})
    else:
        console.line(str(out))
        console.note(
            f"wrote a new master keyring to {out} (mode 0600): set {ENV_MASTER_KEY} to its "
            "contents on every server of the store, and keep a copy in your secret manager"
        )
    return 0


def add_master_key_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    master_key = commands.add_parser(
        "master-key",
        help="rotate the master key that seals the stored secrets",
        description="The master keyring that seals every stored secret (AES-256-GCM). "
        "No command prints key material.",
    )
    sub = master_key.add_subparsers(dest="master_key_command", metavar="COMMAND", required=True)
    rotate = sub.add_parser(
        "rotate",
        parents=[common],
        help="add a master-key version and re-seal every secret under it; prints how many",
        description="Add a master-key version and re-seal every stored secret under it "
        "while verifiers keep running. A SQLite store's key file receives the new keyring; "
        f"a keyring from ${ENV_MASTER_KEY} (always, for PostgreSQL) goes to --keyring-out.",
    )
    rotate.add_argument(
        "--keyring-out",
        metavar="FILE",
        help=f"for a keyring from ${ENV_MASTER_KEY}: a new file (mode 0600) that receives the "
        "new keyring, before anything is sealed under it",
    )
    rotate.set_defaults(run=_rotate)
    generate = sub.add_parser(
        "generate",
        parents=[common],
        help=f"write a new master keyring to a file (for ${ENV_MASTER_KEY}, a new store)",
    )
    generate.add_argument(
        "--out", required=True, metavar="FILE", help="a new file (mode 0600); never replaced"
    )
    generate.set_defaults(run=_generate)
