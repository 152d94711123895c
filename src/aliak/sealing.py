"""Where the master keyring comes from, and how it rotates on disk.

:func:`load_master_keyring`: an argument, the ``ALIAK_MASTER_KEY`` environment variable,
or a key file beside the database (:class:`KeyFile`), created with mode 0600 on first
use. Rotation adds a version; every verifier that can read the key file picks it up, and
:meth:`aliak.keys.KeyManager.rotate_master_key` re-seals the stored secrets one by one
(compare-and-set), so nothing stops and nothing is lost.

A keyring belongs to its store: a store records a check value per master-key version
(:meth:`MasterKeyring.check_value`, in its settings under ``master_key_check:<version>``)
and :func:`keyring_checks_to_record` refuses, naming where the keyring came from, a
keyring that does not match them; :func:`check_agrees_with_key_file` refuses a keyring
from the argument or the environment that disagrees with the key file beside the
database, rather than let one silently win.

The keyring itself (sealing and opening, pure cryptography) is :mod:`aliak.keyring`; its
names are re-exported here.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aliak.errors import InternalError, InvalidParameter
from aliak.keyring import MasterKeyring, SealingError, UnknownMasterKeyVersion, sealed_version

__all__ = [
    "CHECK_SAMPLE_SIZE",
    "CHECK_SETTING_PREFIX",
    "ENV_MASTER_KEY",
    "SOURCE_ARGUMENT",
    "KeyFile",
    "MasterKeyring",
    "SealingError",
    "UnknownMasterKeyVersion",
    "check_agrees_with_key_file",
    "check_setting_range",
    "keyring_checks_to_record",
    "load_master_keyring",
    "locate_master_keyring",
    "recorded_checks",
    "sealed_version",
]

ENV_MASTER_KEY = "ALIAK_MASTER_KEY"
SOURCE_ARGUMENT = "the master_key argument"
CHECK_SETTING_PREFIX = "master_key_check:"
# How many stored secrets a first check opens, on a store that has no check values yet.
CHECK_SAMPLE_SIZE = 16


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
        try:
            text = self.path.read_text("ascii")
        except UnicodeDecodeError:
            raise InvalidParameter(
                "MasterKeyFile", detail=f"{self.path} is not a master key file (not ASCII)"
            ) from None
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
    keyring, file, _source = locate_master_keyring(master_key, key_file=key_file, environ=environ)
    return keyring, file


def locate_master_keyring(
    master_key: MasterKeyring | str | bytes | None = None,
    *,
    key_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[MasterKeyring, KeyFile | None, str]:
    """As :func:`load_master_keyring`, and where the keyring came from, for messages:
    :data:`SOURCE_ARGUMENT`, :data:`ENV_MASTER_KEY`, or ``"the key file <path>"``."""
    if isinstance(master_key, MasterKeyring):
        return master_key, None, SOURCE_ARGUMENT
    if isinstance(master_key, bytes):
        return MasterKeyring({1: master_key}), None, SOURCE_ARGUMENT
    if isinstance(master_key, str):
        return MasterKeyring.from_text(master_key), None, SOURCE_ARGUMENT
    env = os.environ if environ is None else environ
    if env.get(ENV_MASTER_KEY):
        return MasterKeyring.from_text(env[ENV_MASTER_KEY]), None, ENV_MASTER_KEY
    if key_file is None:
        raise InvalidParameter(
            "MasterKey", detail=f"give master_key=..., set {ENV_MASTER_KEY}, or use a key file"
        )
    file = KeyFile(key_file)
    return file.load_or_create(), file, f"the key file {file.path}"


# -- a keyring belongs to its store ---------------------------------------------------------


def check_setting_range() -> tuple[str, str]:
    """``(low, high)``: the setting names of check values are ``low <= name < high``."""
    return CHECK_SETTING_PREFIX, CHECK_SETTING_PREFIX[:-1] + chr(ord(CHECK_SETTING_PREFIX[-1]) + 1)


def recorded_checks(settings: Iterable[tuple[str, str]]) -> dict[int, str]:
    """The check values by version, from ``(name, value)`` settings rows."""
    recorded: dict[int, str] = {}
    for name, value in settings:
        if not name.startswith(CHECK_SETTING_PREFIX):
            continue
        version = name[len(CHECK_SETTING_PREFIX) :]
        if not (version.isascii() and version.isdecimal()):
            raise InternalError(detail=f"the store's setting {name!r} is not a check value")
        recorded[int(version)] = value
    return recorded


def keyring_checks_to_record(
    keyring: MasterKeyring,
    recorded: Mapping[int, str],
    *,
    source: str,
    where: str,
    sealed_samples: Sequence[tuple[str, bytes]] = (),
) -> dict[str, str]:
    """Refuse ``keyring`` unless it is the store's; answer the settings to add.

    ``recorded``: the store's check values by version, read in the transaction that
    will write the answer. Every version both hold must match, and the keyring must
    hold the newest recorded version (what the store seals under since its last
    rotation). A store with no check values yet (new, or written before they existed)
    has its ``sealed_samples`` (a few ``(access_key_id, sealed_secret)``) opened instead:
    a keyring that opens none of them is not its keyring. The answer: a new check value
    for each version of the keyring the store has not recorded (``{name: value}``).
    Raises :class:`~aliak.errors.InvalidParameter` (``MasterKey``) naming ``source`` and
    ``where``; no key material is ever part of a message.
    """
    for version in sorted(recorded.keys() & set(keyring.versions)):
        try:
            matches = keyring.matches_check_value(version, recorded[version])
        except SealingError as error:
            raise InternalError(detail=f"{where}: {error.detail}") from error
        if not matches:
            raise InvalidParameter(
                "MasterKey",
                detail=f"the master key from {source} is not the one {where} was sealed with: "
                f"its version {version} does not match the check value the store recorded; "
                "give the store's own master key",
            )
    if recorded:
        newest = max(recorded)
        if newest not in keyring.versions:
            raise InvalidParameter(
                "MasterKey",
                detail=f"the master keyring from {source} lacks version {newest}, which {where} "
                "seals under since its last rotation; give a keyring that holds it",
            )
    else:
        _check_opens_samples(keyring, sealed_samples, source=source, where=where)
    return {
        f"{CHECK_SETTING_PREFIX}{version}": keyring.check_value(version)
        for version in keyring.versions
        if version not in recorded
    }


def _check_opens_samples(
    keyring: MasterKeyring, samples: Sequence[tuple[str, bytes]], *, source: str, where: str
) -> None:
    held: set[int] = set()
    for access_key_id, sealed in samples[:CHECK_SAMPLE_SIZE]:
        try:
            version = sealed_version(sealed)
        except SealingError:
            continue  # not ours to judge here; opening it fails on its own later
        if version not in keyring.versions:
            continue
        held.add(version)
        try:
            keyring.open_secret(access_key_id, sealed)
        except SealingError:
            raise InvalidParameter(
                "MasterKey",
                detail=f"the master key from {source} does not open the secrets {where} "
                f"holds (version {version}); give the store's own master key",
            ) from None
    if samples and not held:
        raise InvalidParameter(
            "MasterKey",
            detail=f"the secrets {where} holds are sealed under master key versions the "
            f"keyring from {source} lacks; give the store's own master key",
        )


def check_agrees_with_key_file(
    keyring: MasterKeyring, source: str, key_file: str | os.PathLike[str]
) -> None:
    """Refuse a keyring from ``source`` (the argument or the environment) when a key file
    exists at ``key_file`` with another key: which of the two the store's secrets were
    sealed with is unknown, and letting one win silently makes the other's secrets fail.
    They agree when they share a version and every shared version has the same key (one
    may have versions the other has not yet, after a rotation)."""
    path = Path(key_file)
    if not path.exists():
        return
    try:
        on_disk = KeyFile(path).load()
    except OSError as error:
        raise InvalidParameter(
            "MasterKeyFile", detail=f"cannot read {path}: {error.strerror}"
        ) from error
    differing = keyring.differing_versions(on_disk)
    if differing or not set(keyring.versions) & set(on_disk.versions):
        which = (
            f"version {', '.join(map(str, differing))} differs"
            if differing
            else "they share no version"
        )
        raise InvalidParameter(
            "MasterKey",
            detail=f"{source} and the key file {path} hold different master keys ({which}); "
            "one of them is not this store's: remove or fix the wrong one instead of letting "
            "one win",
        )
