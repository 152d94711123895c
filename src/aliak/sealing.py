"""Secrets at rest: AES-256-GCM under a versioned key-encryption key (DESIGN principle 5).

A :class:`MasterKeyring` holds one or more master keys by version. It seals with the
newest and opens with whichever sealed. Each purpose (AccessKey secrets, STS tokens)
gets its own subkey, derived with HKDF, and every sealed value is bound to what it
belongs to by associated data (the AccessKey id), so a sealed secret copied onto another
key does not open.

Sealed format: ``b"\\x01" | kek_version (4 bytes, big-endian) | nonce (12) | ciphertext+tag``.

Where the master key comes from (:func:`load_master_keyring`): an argument, the
``ALIAK_MASTER_KEY`` environment variable, or a key file beside the database, created
with mode 0600 on first use. Rotation adds a version; every verifier that can read the
key file picks it up, and :meth:`aliak.keys.KeyManager.rotate_master_key` re-seals the
stored secrets one by one (compare-and-set), so nothing stops and nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aliak.credentials import Secret
from aliak.errors import InternalError, InvalidParameter

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
_FORMAT = 1
_NONCE_SIZE = 12
_HEADER_SIZE = 1 + 4 + _NONCE_SIZE
_MASTER_KEY_SIZE = 32
_PURPOSE_SECRET = b"aliak/v1/access-key-secret"

_keyring_entry = re.compile(r"\s*(\d{1,9})\s*:\s*([A-Za-z0-9+/=_-]+)\s*")


class SealingError(InternalError):
    """A sealed value does not open: corrupted, or sealed under a key we do not hold.

    Surfaces as ``InternalError`` (500): it is never the client's fault.
    """


class UnknownMasterKeyVersion(SealingError):
    """Sealed under a master-key version this keyring does not hold (yet): another
    process may have rotated the key; reload the keyring and try again."""


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _MASTER_KEY_SIZE:
        raise InvalidParameter(
            "MasterKey", detail="a master key is 32 random bytes, base64-encoded"
        )
    return raw


class MasterKeyring:
    """Master keys by version; the highest version seals. Masked in ``repr``."""

    __slots__ = ("_ciphers", "_keys", "current_version")

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        if not keys:
            raise InvalidParameter("MasterKey", detail="a keyring needs at least one key")
        for version, key in keys.items():
            if not isinstance(version, int) or not 0 < version < 2**32:
                raise InvalidParameter("MasterKey", detail="key versions are 1 .. 2**32-1")
            if not isinstance(key, bytes) or len(key) != _MASTER_KEY_SIZE:
                raise InvalidParameter("MasterKey", detail="a master key is 32 bytes")
        self._keys = dict(keys)
        self.current_version = max(self._keys)
        self._ciphers: dict[tuple[int, bytes], AESGCM] = {}

    @classmethod
    def generate(cls) -> MasterKeyring:
        return cls({1: os.urandom(_MASTER_KEY_SIZE)})

    @classmethod
    def from_text(cls, text: str) -> MasterKeyring:
        """``"<base64>"`` (version 1) or ``"1:<base64>,2:<base64>"`` (commas or newlines)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidParameter("MasterKey", detail="empty")
        pieces = [piece for piece in re.split(r"[,\n]", text) if piece.strip()]
        if len(pieces) == 1 and ":" not in pieces[0]:
            return cls({1: _decode_key(pieces[0].strip())})
        keys: dict[int, bytes] = {}
        for piece in pieces:
            match = _keyring_entry.fullmatch(piece)
            if match is None:
                raise InvalidParameter("MasterKey", detail="expected VERSION:BASE64 entries")
            version = int(match.group(1))
            if version in keys:
                raise InvalidParameter("MasterKey", detail=f"version {version} appears twice")
            keys[version] = _decode_key(match.group(2))
        return cls(keys)

    def to_text(self) -> str:
        """The keyring as stored in a key file. This *is* secret material."""
        return "".join(
            f"{version}:{base64.urlsafe_b64encode(key).decode()}\n"
            for version, key in sorted(self._keys.items())
        )

    def with_new_key(self) -> MasterKeyring:
        """A keyring with one more, newest, random key (the old ones still open)."""
        return MasterKeyring({**self._keys, self.current_version + 1: os.urandom(32)})

    def without_versions_below(self, version: int) -> MasterKeyring:
        return MasterKeyring({v: k for v, k in self._keys.items() if v >= version})

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def __repr__(self) -> str:
        return f"MasterKeyring(versions={list(self.versions)}, current={self.current_version})"

    def _cipher(self, version: int, purpose: bytes) -> AESGCM:
        cipher = self._ciphers.get((version, purpose))
        if cipher is None:
            key = self._keys.get(version)
            if key is None:
                raise UnknownMasterKeyVersion(
                    detail=f"no master key of version {version} is loaded"
                )
            subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)
            cipher = AESGCM(subkey)
            self._ciphers[(version, purpose)] = cipher
        return cipher

    def seal(self, purpose: bytes, associated_data: bytes, plaintext: bytes) -> bytes:
        version = self.current_version
        nonce = os.urandom(_NONCE_SIZE)
        header = bytes([_FORMAT]) + version.to_bytes(4, "big") + nonce
        body = self._cipher(version, purpose).encrypt(nonce, plaintext, header + associated_data)
        return header + body

    def open(self, purpose: bytes, associated_data: bytes, sealed: bytes) -> bytes:
        version = sealed_version(sealed)
        header = sealed[:_HEADER_SIZE]
        nonce = header[5:]
        try:
            return self._cipher(version, purpose).decrypt(
                nonce, sealed[_HEADER_SIZE:], header + associated_data
            )
        except InvalidTag:
            raise SealingError(detail="a sealed value failed authentication") from None

    def seal_secret(self, access_key_id: str, secret: Secret) -> bytes:
        """Seal an AccessKey secret, bound to its key id."""
        return self.seal(_PURPOSE_SECRET, access_key_id.encode(), secret.reveal().encode())

    def open_secret(self, access_key_id: str, sealed: bytes) -> Secret:
        return Secret(self.open(_PURPOSE_SECRET, access_key_id.encode(), sealed).decode())


def sealed_version(sealed: bytes) -> int:
    """The master-key version a value was sealed under."""
    if not isinstance(sealed, bytes) or len(sealed) <= _HEADER_SIZE or sealed[0] != _FORMAT:
        raise SealingError(detail="not a sealed value of a known format")
    return int.from_bytes(sealed[1:5], "big")


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
