"""aliak: Alibaba Cloud V3 (ACS3) request signing and AccessKey verification, in-process.

The names in ``__all__`` are the public contract; everything else may change.
"""

from aliak.acl import NetworkPolicy
from aliak.algorithms import ALGORITHM_NAMES, AlgorithmName
from aliak.authorization import Authorization, format_authorization, parse_authorization
from aliak.canonical import canonical_query_string
from aliak.credentials import (
    AccessKey,
    CredentialsProvider,
    EnvironmentCredentialsProvider,
    Secret,
    StsCredential,
)
from aliak.encoding import parse_query_string, path_from_segments, percent_encode
from aliak.errors import AliakError
from aliak.keys import AccessKeyInfo, KeyManager, NewAccessKey
from aliak.model import (
    Account,
    AssumedRole,
    AuditEvent,
    KeyRecord,
    KeyStatus,
    LastUsed,
    RamRole,
    RamUser,
)
from aliak.request import Headers, Request
from aliak.sealing import MasterKeyring
from aliak.signer import Signer, SigningResult
from aliak.storage.memory import MemoryStore
from aliak.storage.sqlite import SQLiteStore
from aliak.verifier import AsyncVerifier, Verified, Verifier, VerifierSettings

__all__ = [
    "ALGORITHM_NAMES",
    "AccessKey",
    "AccessKeyInfo",
    "Account",
    "AlgorithmName",
    "AliakError",
    "AssumedRole",
    "AsyncVerifier",
    "AuditEvent",
    "Authorization",
    "CredentialsProvider",
    "EnvironmentCredentialsProvider",
    "Headers",
    "KeyManager",
    "KeyRecord",
    "KeyStatus",
    "LastUsed",
    "MasterKeyring",
    "MemoryStore",
    "NetworkPolicy",
    "NewAccessKey",
    "RamRole",
    "RamUser",
    "Request",
    "SQLiteStore",
    "Secret",
    "Signer",
    "SigningResult",
    "StsCredential",
    "Verified",
    "Verifier",
    "VerifierSettings",
    "canonical_query_string",
    "format_authorization",
    "parse_authorization",
    "parse_query_string",
    "path_from_segments",
    "percent_encode",
]

__version__ = "0.1.0"
