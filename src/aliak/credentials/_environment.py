"""The official SDKs' environment variables, and the provider that reads the three of a
static credential (spec ``credentials-chain.md`` §2.1).

The names are those of ``alibabacloud_credentials/utils/auth_util.py`` (1.0.12).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aliak.credentials._errors import CredentialsNotFound
from aliak.credentials._values import AccessKey, Credential, StsCredential

__all__ = [
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
    "ENV_CLI_PROFILE_DISABLED",
    "ENV_CREDENTIALS_FILE",
    "ENV_CREDENTIALS_URI",
    "ENV_ECS_METADATA",
    "ENV_ECS_METADATA_DISABLED",
    "ENV_IMDSV1_DISABLED",
    "ENV_OIDC_PROVIDER_ARN",
    "ENV_OIDC_TOKEN_FILE",
    "ENV_PROFILE",
    "ENV_ROLE_ARN",
    "ENV_ROLE_SESSION_NAME",
    "ENV_SECURITY_TOKEN",
    "ENV_STS_REGION",
    "ENV_VPC_ENDPOINT_ENABLED",
    "EnvironmentCredentialsProvider",
    "env_flag",
]

ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"  # noqa: S105 - a variable name
ENV_ROLE_ARN = "ALIBABA_CLOUD_ROLE_ARN"
ENV_OIDC_PROVIDER_ARN = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"
ENV_OIDC_TOKEN_FILE = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"  # noqa: S105 - a variable name
ENV_ROLE_SESSION_NAME = "ALIBABA_CLOUD_ROLE_SESSION_NAME"
ENV_PROFILE = "ALIBABA_CLOUD_PROFILE"
ENV_CLI_PROFILE_DISABLED = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"
ENV_CREDENTIALS_FILE = "ALIBABA_CLOUD_CREDENTIALS_FILE"
ENV_ECS_METADATA = "ALIBABA_CLOUD_ECS_METADATA"
ENV_ECS_METADATA_DISABLED = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
ENV_IMDSV1_DISABLED = "ALIBABA_CLOUD_IMDSV1_DISABLED"
ENV_CREDENTIALS_URI = "ALIBABA_CLOUD_CREDENTIALS_URI"
ENV_STS_REGION = "ALIBABA_CLOUD_STS_REGION"
ENV_VPC_ENDPOINT_ENABLED = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """The official library's reading of a switch: ``true`` in any case, nothing else."""
    return environ.get(name, "").strip().lower() == "true"


class EnvironmentCredentialsProvider:
    """Reads the official SDK's variables once, at construction.

    ``ALIBABA_CLOUD_ACCESS_KEY_ID`` and ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` are required;
    with ``ALIBABA_CLOUD_SECURITY_TOKEN`` set as well the credential is an
    :class:`StsCredential` (its expiry unknown). A missing variable raises
    :class:`CredentialsNotFound` (a :class:`~aliak.MissingParameter`) naming it.
    """

    __slots__ = ("_credential",)

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        access_key_id = env.get(ENV_ACCESS_KEY_ID, "")
        secret = env.get(ENV_ACCESS_KEY_SECRET, "")
        token = env.get(ENV_SECURITY_TOKEN, "")
        for name, value in ((ENV_ACCESS_KEY_ID, access_key_id), (ENV_ACCESS_KEY_SECRET, secret)):
            if not value:
                raise CredentialsNotFound(name, detail=f"export {name} (environment variable)")
        self._credential: Credential = (
            StsCredential(access_key_id, secret, token)
            if token
            else AccessKey(access_key_id, secret)
        )

    def get_credential(self) -> Credential:
        return self._credential

    def __repr__(self) -> str:
        return f"EnvironmentCredentialsProvider({self._credential!r})"
