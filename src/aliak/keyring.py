"""The master keyring: secrets sealed with AES-256-GCM under versioned key-encryption
keys (DESIGN principle 5). A value module: pure cryptography over bytes, no file or
environment is read here (that is :mod:`aliak.sealing`'s part).

A :class:`MasterKeyring` holds one or more master keys by version. It seals with the
newest and opens with whichever sealed. Each purpose (AccessKey secrets, STS tokens)
gets its own subkey, derived with HKDF, and every sealed value is bound to what it
belongs to by associated data (the AccessKey id), so a sealed secret copied onto another
key does not open.

Sealed format: ``b"\\x01" | kek_version (4 bytes, big-endian) | nonce (12) | ciphertext+tag``.

A store tells its own keyring from another by a *check value* per version
(:meth:`MasterKeyring.check_value`): ``hmac-sha256:<salt>:<tag>``, the tag being
HMAC-SHA256 of a fixed label, the version and a random salt, under a subkey derived (HKDF)
for this purpose alone. It is not the key and opens nothing; over a 256-bit random key
it is a pseudorandom value, so it gives no foothold for guessing the key, and the salt
keeps two stores that share a key from recording the same value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aliak.credentials import Secret
from aliak.errors import InternalError, InvalidParameter

__all__ = ["MasterKeyring", "SealingError", "UnknownMasterKeyVersion", "sealed_version"]

_FORMAT = 1
_NONCE_SIZE = 12
_HEADER_SIZE = 1 + 4 + _NONCE_SIZE
_MASTER_KEY_SIZE = 32
_PURPOSE_SECRET = b"aliak/v1/access-key-secret"
_PURPOSE_CHECK = b"aliak/v1/keyring-check"
_CHECK_FORMAT = "hmac-sha256"
_CHECK_LABEL = b"aliak master key check\x00"
_CHECK_SALT_SIZE = 16

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

    def differing_versions(self, other: MasterKeyring) -> list[int]:
        """The versions both keyrings hold with different keys (compared in constant
        time; nothing about the keys leaves this method)."""
        shared = sorted(self._keys.keys() & other._keys.keys())
        return [v for v in shared if not hmac.compare_digest(self._keys[v], other._keys[v])]

    def check_value(self, version: int) -> str:
        """A fresh check value for ``version`` (see the module docstring): what a store
        records so that it can later tell whether a keyring holds the same key."""
        salt = os.urandom(_CHECK_SALT_SIZE)
        tag = self._check_tag(version, salt)
        return f"{_CHECK_FORMAT}:{_b64(salt)}:{_b64(tag)}"

    def matches_check_value(self, version: int, value: str) -> bool:
        """Whether this keyring's ``version`` is the key ``value`` was made with.

        Raises :class:`UnknownMasterKeyVersion` if the keyring lacks the version, and
        :class:`SealingError` if ``value`` is not a check value.
        """
        parts = value.split(":") if isinstance(value, str) else []
        if len(parts) != 3 or parts[0] != _CHECK_FORMAT:
            raise SealingError(detail=f"the check value of master key version {version} is corrupt")
        try:
            # Strictly: a lenient decoder would drop junk and let a tampered value match.
            salt = base64.b64decode(parts[1], altchars=b"-_", validate=True)
            tag = base64.b64decode(parts[2], altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            salt = tag = b""
        if len(salt) != _CHECK_SALT_SIZE or len(tag) != hashlib.sha256().digest_size:
            raise SealingError(detail=f"the check value of master key version {version} is corrupt")
        return hmac.compare_digest(self._check_tag(version, salt), tag)

    def _check_tag(self, version: int, salt: bytes) -> bytes:
        key = self._keys.get(version)
        if key is None:
            raise UnknownMasterKeyVersion(detail=f"no master key of version {version} is loaded")
        subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE_CHECK).derive(
            key
        )
        message = _CHECK_LABEL + version.to_bytes(4, "big") + salt
        return hmac.new(subkey, message, hashlib.sha256).digest()

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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def sealed_version(sealed: bytes) -> int:
    """The master-key version a value was sealed under."""
    if not isinstance(sealed, bytes) or len(sealed) <= _HEADER_SIZE or sealed[0] != _FORMAT:
        raise SealingError(detail="not a sealed value of a known format")
    return int.from_bytes(sealed[1:5], "big")
