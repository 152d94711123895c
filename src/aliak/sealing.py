"""Where the master keyring comes from, and how it rotates on disk.

:func:`load_master_keyring`: an argument, the ``ALIAK_MASTER_KEY`` environment variable,
or a key file beside the database (:class:`KeyFile`), created with mode 0600 on first
use. Rotation adds a version; every verifier that can read the key file picks it up, and
:meth:`aliak.keys.KeyManager.rotate_master_key` re-seals the stored secrets one by one
(compare-and-set), so nothing stops and nothing is lost.

The keyring itself (sealing and opening, pure cryptography) is :mod:`aliak.keyring`; its
names are re-exported here.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from aliak.errors import InvalidParameter
from aliak.keyring import MasterKeyring, SealingError, UnknownMasterKeyVersion, sealed_version

__all__ = [
    "ENV_MASTER_KEY",
    "KeyFile",
    "MasterKeyring",
    "SealingError",
    "UnknownMasterKeyVersion",
    "load_master_keyring",
    "sealed_version",
]

ENV_MASTER_KEY = "ALIAK_MASTER_KEY"


class KeyFile:
    """The embedded default: the keyring in a file beside the database, mode 0600.

    Created atomically on first use (``O_EXCL``), so two processes starting together
    agree on one key. Rotation writes a new file and renames it into place.
    """

    __slots__ = ("_lock", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyFile({str(self.path)!r})"

    def load_or_create(self) -> MasterKeyring:
        try:
            return self.load()
        except FileNotFoundError:
            pass
        keyring = MasterKeyring.generate()
        temporary = self._write_temporary(keyring)
        try:
            # link() publishes a complete file or fails if one exists: nobody can ever read
            # a half-written key, and two processes starting together agree on one key.
            os.link(temporary, self.path)
        except FileExistsError:
            return self.load()  # another process won the race; use its key
        finally:
            os.unlink(temporary)
        _fsync_directory(self.path.parent)
        return keyring

    def _write_temporary(self, keyring: MasterKeyring) -> str:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(keyring.to_text())
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            os.unlink(temporary)
            raise
        return temporary

    def load(self) -> MasterKeyring:
        mode = self.path.stat().st_mode
        if mode & 0o077:
            raise InvalidParameter(
                "MasterKeyFile",
                detail=f"{self.path} is readable by group or others; chmod 600 it",
            )
        text = self.path.read_text("ascii")
        if not text.strip():
            raise SealingError(detail=f"the master key file {self.path} is empty")
        return MasterKeyring.from_text(text)

    def save(self, keyring: MasterKeyring) -> None:
        """Replace the file atomically (write a temporary file, fsync, rename)."""
        with self._lock:
            temporary = self._write_temporary(keyring)
            try:
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
            _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_master_keyring(
    master_key: MasterKeyring | str | bytes | None = None,
    *,
    key_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[MasterKeyring, KeyFile | None]:
    """The keyring, from (in order) the argument, ``ALIAK_MASTER_KEY``, or ``key_file``.

    Returns the key file too when that is where the keyring lives, so rotation can
    write it back and other processes can reload it.
    """
    if isinstance(master_key, MasterKeyring):
        return master_key, None
    if isinstance(master_key, bytes):
        return MasterKeyring({1: master_key}), None
    if isinstance(master_key, str):
        return MasterKeyring.from_text(master_key), None
    env = os.environ if environ is None else environ
    if env.get(ENV_MASTER_KEY):
        return MasterKeyring.from_text(env[ENV_MASTER_KEY]), None
    if key_file is None:
        raise InvalidParameter(
            "MasterKey", detail=f"give master_key=..., set {ENV_MASTER_KEY}, or use a key file"
        )
    file = KeyFile(key_file)
    return file.load_or_create(), file
