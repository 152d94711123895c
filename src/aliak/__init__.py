"""aliak: Alibaba Cloud V3 (ACS3) request signing and AccessKey verification, in-process.

The names in ``__all__`` are the public contract; everything else may change.
"""

from aliak.algorithms import ALGORITHM_NAMES, AlgorithmName
from aliak.authorization import Authorization, format_authorization, parse_authorization
from aliak.credentials import (
    AccessKey,
    CredentialsProvider,
    EnvironmentCredentialsProvider,
    Secret,
    StsCredential,
)
from aliak.encoding import path_from_segments, percent_encode
from aliak.errors import AliakError
from aliak.request import Headers, Request
from aliak.signer import Signer, SigningResult

__all__ = [
    "ALGORITHM_NAMES",
    "AccessKey",
    "AlgorithmName",
    "AliakError",
    "Authorization",
    "CredentialsProvider",
    "EnvironmentCredentialsProvider",
    "Headers",
    "Request",
    "Secret",
    "Signer",
    "SigningResult",
    "StsCredential",
    "format_authorization",
    "parse_authorization",
    "path_from_segments",
    "percent_encode",
]

__version__ = "0.1.0"
