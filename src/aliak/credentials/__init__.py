"""Credentials: the values a signer signs with, and where it finds them.

The values (:class:`Secret`, :class:`AccessKey`, :class:`StsCredential`) and the
:class:`CredentialsProvider` port are pure. The providers read the official SDKs' places
(environment variables, ``~/.aliyun/config.json``, ``~/.alibabacloud/credentials.ini``)
and their network sources (STS ``AssumeRole`` / ``AssumeRoleWithOIDC``, the ECS metadata
service, a credentials URI), keeping temporary credentials fresh
(:class:`RefreshingCredentialsProvider`); :class:`DefaultCredentialsProvider` tries them
in the official order. Their I/O is the standard library's, reached only when a provider
is asked; nothing here imports a layer above the values.
"""

from aliak.credentials._chain import CredentialsProviderChain, DefaultCredentialsProvider
from aliak.credentials._ecs import METADATA_URL, EcsRamRoleCredentialsProvider
from aliak.credentials._environment import (
    ENV_ACCESS_KEY_ID,
    ENV_ACCESS_KEY_SECRET,
    ENV_CLI_PROFILE_DISABLED,
    ENV_CREDENTIALS_FILE,
    ENV_CREDENTIALS_URI,
    ENV_ECS_METADATA,
    ENV_ECS_METADATA_DISABLED,
    ENV_IMDSV1_DISABLED,
    ENV_OIDC_PROVIDER_ARN,
    ENV_OIDC_TOKEN_FILE,
    ENV_PROFILE,
    ENV_ROLE_ARN,
    ENV_ROLE_SESSION_NAME,
    ENV_SECURITY_TOKEN,
    ENV_STS_REGION,
    ENV_VPC_ENDPOINT_ENABLED,
    EnvironmentCredentialsProvider,
)
from aliak.credentials._errors import (
    CredentialsNotFound,
    CredentialsSourceError,
    CredentialsUnavailable,
)
from aliak.credentials._profiles import (
    CLI_PROFILE_MODES,
    INI_PROFILE_TYPES,
    CLIProfileCredentialsProvider,
    ProfileCredentialsProvider,
    SourceOptions,
    cli_profile_provider,
    ini_profile_provider,
    parse_ini,
)
from aliak.credentials._refresh import STALE_MARGIN, RefreshingCredentialsProvider
from aliak.credentials._sts import (
    OIDCRoleArnCredentialsProvider,
    RamRoleArnCredentialsProvider,
    assume_role_query,
    credential_from_answer,
    parse_expiration,
    resolve_sts_endpoint,
)
from aliak.credentials._uri import CredentialsURIProvider
from aliak.credentials._values import (
    ACCESS_KEY_ID_PATTERN,
    STS_ID_PREFIX,
    AccessKey,
    Credential,
    CredentialsProvider,
    Secret,
    StaticCredentialsProvider,
    StsCredential,
    check_access_key_id,
    is_sts_access_key_id,
    is_valid_access_key_id,
)

__all__ = [
    "ACCESS_KEY_ID_PATTERN",
    "CLI_PROFILE_MODES",
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
    "INI_PROFILE_TYPES",
    "METADATA_URL",
    "STALE_MARGIN",
    "STS_ID_PREFIX",
    "AccessKey",
    "CLIProfileCredentialsProvider",
    "Credential",
    "CredentialsNotFound",
    "CredentialsProvider",
    "CredentialsProviderChain",
    "CredentialsSourceError",
    "CredentialsURIProvider",
    "CredentialsUnavailable",
    "DefaultCredentialsProvider",
    "EcsRamRoleCredentialsProvider",
    "EnvironmentCredentialsProvider",
    "OIDCRoleArnCredentialsProvider",
    "ProfileCredentialsProvider",
    "RamRoleArnCredentialsProvider",
    "RefreshingCredentialsProvider",
    "Secret",
    "SourceOptions",
    "StaticCredentialsProvider",
    "StsCredential",
    "assume_role_query",
    "check_access_key_id",
    "cli_profile_provider",
    "credential_from_answer",
    "ini_profile_provider",
    "is_sts_access_key_id",
    "is_valid_access_key_id",
    "parse_expiration",
    "parse_ini",
    "resolve_sts_endpoint",
]
