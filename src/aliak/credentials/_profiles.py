"""Credentials named in files: the aliyun CLI's ``~/.aliyun/config.json`` and the SDKs'
``~/.alibabacloud/credentials.ini`` (spec ``credentials-chain.md`` §2.2), with the
fields of the official library (``provider/cli_profile.py``, ``provider/profile.py``).

Each file is read once, on the first :meth:`get_credential`; a profile that names a role
then refreshes through that role's provider. What a file says is turned into a provider
by pure functions over the parsed content (:func:`cli_profile_provider`,
:func:`ini_profile_provider`), so every error names the file, the field and the fix.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from aliak.credentials._ecs import METADATA_URL, EcsRamRoleCredentialsProvider
from aliak.credentials._environment import (
    ENV_CLI_PROFILE_DISABLED,
    ENV_CREDENTIALS_FILE,
    ENV_PROFILE,
    env_flag,
)
from aliak.credentials._errors import CredentialsNotFound, CredentialsSourceError
from aliak.credentials._sts import (
    DEFAULT_DURATION_SECONDS,
    OIDCRoleArnCredentialsProvider,
    RamRoleArnCredentialsProvider,
)
from aliak.credentials._uri import CredentialsURIProvider
from aliak.credentials._values import (
    AccessKey,
    Credential,
    CredentialsProvider,
    StaticCredentialsProvider,
    StsCredential,
)
from aliak.errors import AliakError
from aliak.timestamps import Clock, system_clock

__all__ = [
    "CLI_PROFILE_MODES",
    "INI_PROFILE_TYPES",
    "CLIProfileCredentialsProvider",
    "ProfileCredentialsProvider",
    "SourceOptions",
    "cli_profile_provider",
    "ini_profile_provider",
    "parse_ini",
]

CLI_PROFILE_MODES = (
    "AK",
    "StsToken",
    "RamRoleArn",
    "EcsRamRole",
    "OIDC",
    "ChainableRamRoleArn",
    "CredentialsURI",
)
INI_PROFILE_TYPES = ("access_key", "ram_role_arn", "oidc_role_arn", "ecs_ram_role")


@attrs.frozen
class SourceOptions:
    """What the network providers a profile names are built with: the clock, the
    environment, and endpoints to use instead of Alibaba's (a local STS, a fake metadata
    service in tests)."""

    clock: Clock = system_clock
    environ: Mapping[str, str] | None = None
    sts_endpoint: str | None = None
    metadata_url: str = METADATA_URL


def _home(home: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    # The official library's HOME: the variable first, then the platform's idea.
    if home is not None:
        return Path(home)
    return Path(environ.get("HOME") or os.path.expanduser("~"))


# -- ~/.aliyun/config.json --------------------------------------------------------------


class _Profile:
    """One profile of config.json, read field by field with errors that name it."""

    def __init__(self, path: str, name: str, fields: Mapping[str, Any]) -> None:
        self.path = path
        self.name = name
        self.fields = fields

    def where(self, key: str) -> str:
        return f'profiles[name="{self.name}"].{key}'

    def text(self, key: str, *, fix: str | None = None) -> str:
        value = self.fields.get(key)
        if not isinstance(value, str) or not value:
            raise CredentialsSourceError(
                self.path, self.where(key), fix=fix or "set it (a non-empty string)"
            )
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.fields.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise CredentialsSourceError(self.path, self.where(key), fix="make it a string")
        return value

    def seconds(self, key: str) -> int:
        value = self.fields.get(key)
        if value is None or value == 0:  # the CLI writes 0 for "not set"
            return DEFAULT_DURATION_SECONDS
        if not isinstance(value, int) or isinstance(value, bool):
            raise CredentialsSourceError(
                self.path, self.where(key), fix="make it a whole number of seconds"
            )
        return value

    def flag(self, key: str) -> bool | None:
        value = self.fields.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise CredentialsSourceError(self.path, self.where(key), fix="make it true or false")


def cli_profile_provider(
    config: object,
    profile_name: str | None,
    *,
    path: str,
    options: SourceOptions | None = None,
) -> CredentialsProvider:
    """The provider for profile ``profile_name`` (``None``: the file's ``current``) of a
    parsed config.json."""
    options = options or SourceOptions()
    if not isinstance(config, dict):
        raise CredentialsSourceError(path, "", fix="the file must hold a JSON object")
    name = profile_name or config.get("current")
    if not isinstance(name, str) or not name:
        raise CredentialsSourceError(
            path, "current", fix=f"name the profile to use in current, or in {ENV_PROFILE}"
        )
    return _cli_provider(config, name, path=path, options=options, chain=())


def _find_profile(config: Mapping[str, Any], name: str, *, path: str) -> _Profile:
    profiles = config.get("profiles", [])
    if not isinstance(profiles, list):
        raise CredentialsSourceError(path, "profiles", fix="make it a list of profile objects")
    for fields in profiles:
        if isinstance(fields, dict) and fields.get("name") == name:
            return _Profile(path, name, fields)
    raise CredentialsNotFound(
        f'{path}: profiles[name="{name}"]',
        detail=f"add it with `aliyun configure --profile {name}`, or pick another profile",
    )


def _cli_provider(
    config: Mapping[str, Any],
    name: str,
    *,
    path: str,
    options: SourceOptions,
    chain: tuple[str, ...],
) -> CredentialsProvider:
    if name in chain:
        raise CredentialsSourceError(
            path,
            f'profiles[name="{chain[-1]}"].source_profile',
            fix=f"the source profiles loop ({' -> '.join((*chain, name))}); break the loop",
        )
    profile = _find_profile(config, name, path=path)
    mode = profile.fields.get("mode")
    origin = f'{path} profile "{name}"'
    if mode == "AK":
        return StaticCredentialsProvider(
            _checked(profile, lambda: AccessKey(*_key_fields(profile)))
        )
    if mode == "StsToken":
        token = profile.text("sts_token")
        return StaticCredentialsProvider(
            _checked(profile, lambda: StsCredential(*_key_fields(profile), token))
        )
    if mode in {"RamRoleArn", "ChainableRamRoleArn"}:
        if mode == "RamRoleArn":
            base: CredentialsProvider = StaticCredentialsProvider(
                _checked(profile, lambda: AccessKey(*_key_fields(profile)))
            )
        else:
            source = profile.text("source_profile", fix="name the profile whose key assumes it")
            base = _cli_provider(config, source, path=path, options=options, chain=(*chain, name))
        return _role_provider(
            profile,
            lambda: RamRoleArnCredentialsProvider(
                base,
                role_arn=profile.text("ram_role_arn"),
                role_session_name=profile.optional_text("ram_session_name"),
                external_id=profile.optional_text("external_id"),
                **_sts_options(profile, options, origin),
            ),
        )
    if mode == "EcsRamRole":
        return EcsRamRoleCredentialsProvider(
            role_name=profile.optional_text("ram_role_name"),
            metadata_url=options.metadata_url,
            environ=options.environ,
            clock=options.clock,
        )
    if mode == "OIDC":
        return _role_provider(
            profile,
            lambda: OIDCRoleArnCredentialsProvider(
                role_arn=profile.text("ram_role_arn"),
                oidc_provider_arn=profile.text("oidc_provider_arn"),
                oidc_token_file=profile.text("oidc_token_file"),
                role_session_name=profile.optional_text("role_session_name"),
                **_sts_options(profile, options, origin),
            ),
        )
    if mode == "CredentialsURI":
        return CredentialsURIProvider(profile.text("credentials_uri"), clock=options.clock)
    raise CredentialsSourceError(
        path,
        profile.where("mode"),
        fix=f"aliak reads the modes {', '.join(CLI_PROFILE_MODES)}; for another, use a profile "
        f"of one of these (or {ENV_CLI_PROFILE_DISABLED}=true to skip this file)",
    )


def _key_fields(profile: _Profile) -> tuple[str, str]:
    return profile.text("access_key_id"), profile.text("access_key_secret")


def _checked(profile: _Profile, build: Any) -> Credential:
    """A credential from the profile, any value error (a malformed id) named by file."""
    try:
        credential: Credential = build()
    except CredentialsSourceError:
        raise
    except AliakError as error:
        raise CredentialsSourceError(
            profile.path, profile.where("access_key_id"), fix=str(error)
        ) from None
    return credential


def _sts_options(profile: _Profile, options: SourceOptions, origin: str) -> dict[str, Any]:
    """What a config.json role profile (RamRoleArn, ChainableRamRoleArn, OIDC) says of
    the STS call besides its role, and the options of the source."""
    return {
        "duration_seconds": profile.seconds("expired_seconds"),
        "policy": profile.optional_text("policy"),
        "sts_endpoint": options.sts_endpoint,
        "sts_region": profile.optional_text("sts_region"),
        "enable_vpc": profile.flag("enable_vpc"),
        "environ": options.environ,
        "clock": options.clock,
        "origin": origin,
    }


def _role_provider(profile: _Profile, build: Any) -> CredentialsProvider:
    try:
        provider: CredentialsProvider = build()
    except CredentialsSourceError as error:
        if error.source == profile.path:
            raise
        # The role provider names its own fields; say which profile they come from.
        raise CredentialsSourceError(
            profile.path,
            profile.where(_PROFILE_FIELD.get(error.field, error.field)),
            fix=str(error.detail),
        ) from None
    return provider


# The role providers' argument names, as the profile spells the field.
_PROFILE_FIELD = {
    "role_arn": "ram_role_arn",
    "duration_seconds": "expired_seconds",
    "oidc_provider_arn": "oidc_provider_arn",
    "oidc_token_file": "oidc_token_file",
}


class _FileProvider:
    """A provider read from a file on first use, then delegated to."""

    def __init__(self) -> None:
        self._inner: CredentialsProvider | None = None
        self._lock = threading.Lock()

    def _load(self) -> CredentialsProvider:
        raise NotImplementedError

    @property
    def provider(self) -> CredentialsProvider:
        """The provider the file names (read now if it was not yet)."""
        inner = self._inner
        if inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = self._load()
                inner = self._inner
        return inner

    def get_credential(self) -> Credential:
        inner = self._inner
        return (inner if inner is not None else self.provider).get_credential()

    async def get_credential_async(self) -> Credential:
        inner = self._inner
        if inner is None:  # the file is read in a worker thread, not on the event loop
            inner = await asyncio.to_thread(lambda: self.provider)
        method = getattr(inner, "get_credential_async", None)
        if method is not None:
            credential: Credential = await method()
            return credential
        return inner.get_credential()


class CLIProfileCredentialsProvider(_FileProvider):
    """A profile of the aliyun CLI's ``~/.aliyun/config.json``: ``profile_name``, else
    ``ALIBABA_CLOUD_PROFILE``, else the file's ``current``. Modes: see
    :data:`CLI_PROFILE_MODES`. ``ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`` turns it off."""

    def __init__(
        self,
        profile_name: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        home: str | os.PathLike[str] | None = None,
        options: SourceOptions | None = None,
    ) -> None:
        super().__init__()
        self._options = options or SourceOptions()
        env = os.environ if self._options.environ is None else self._options.environ
        self._disabled = env_flag(env, ENV_CLI_PROFILE_DISABLED)
        self._profile_name = profile_name or env.get(ENV_PROFILE) or None
        self.path = Path(path) if path is not None else _home(home, env) / ".aliyun" / "config.json"

    def _load(self) -> CredentialsProvider:
        if self._disabled:
            raise CredentialsNotFound(
                str(self.path), detail=f"{ENV_CLI_PROFILE_DISABLED}=true turns this file off"
            )
        text = _read(self.path, fix="run `aliyun configure` to write it")
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            # error.msg and the position only: the document itself may hold secrets.
            raise CredentialsSourceError(
                str(self.path),
                "",
                fix=f"the file is not JSON ({error.msg} at line {error.lineno}, column "
                f"{error.colno}); fix it or rewrite it with `aliyun configure`",
            ) from None
        return cli_profile_provider(
            config, self._profile_name, path=str(self.path), options=self._options
        )

    def __repr__(self) -> str:
        return (
            f"CLIProfileCredentialsProvider(path={str(self.path)!r}, "
            f"profile={self._profile_name!r})"
        )


# -- ~/.alibabacloud/credentials.ini ---------------------------------------------------


def parse_ini(text: str, *, path: str) -> dict[str, dict[str, str]]:
    """Sections of name/value pairs as the official library reads them: keys
    lower-cased, everything from a ``#`` in a value on dropped, values stripped. Unlike
    it, ``%`` is a plain character (no interpolation): a secret may hold one."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as error:
        # Never the offending line: it may hold a secret.
        line = getattr(error, "lineno", None)
        errors = getattr(error, "errors", None)
        if line is None and errors:
            line = errors[0][0]
        raise CredentialsSourceError(
            path,
            "" if line is None else f"line {line}",
            fix=f"the file is not INI ({type(error).__name__}): use [profile] sections of "
            "name = value lines",
        ) from None
    return {
        section: {
            key: (value.split("#")[0] if "#" in value else value).strip()
            for key, value in parser.items(section)
        }
        for section in parser.sections()
    }


def ini_profile_provider(
    section: Mapping[str, str],
    *,
    path: str,
    name: str,
    options: SourceOptions | None = None,
) -> CredentialsProvider:
    """The provider one section of credentials.ini names by its ``type``."""
    options = options or SourceOptions()

    def text(key: str) -> str:
        value = section.get(key, "")
        if not value:
            raise CredentialsSourceError(path, f"[{name}] {key}", fix="set it (key = value)")
        return value

    kind = section.get("type", "")
    # What both role types say of the STS call besides the role.
    role: dict[str, Any] = {
        "role_session_name": section.get("role_session_name") or None,
        "policy": section.get("policy") or None,
        "sts_endpoint": options.sts_endpoint,
        "environ": options.environ,
        "clock": options.clock,
        "origin": f"{path} [{name}]",
    }
    try:
        if kind == "access_key":
            return StaticCredentialsProvider(
                AccessKey(text("access_key_id"), text("access_key_secret"))
            )
        if kind == "ram_role_arn":
            key = AccessKey(text("access_key_id"), text("access_key_secret"))
            return RamRoleArnCredentialsProvider(
                key,
                role_arn=text("role_arn"),
                **role,
            )
        if kind == "oidc_role_arn":
            return OIDCRoleArnCredentialsProvider(
                role_arn=text("role_arn"),
                oidc_provider_arn=text("oidc_provider_arn"),
                oidc_token_file=text("oidc_token_file_path"),
                **role,
            )
        if kind == "ecs_ram_role":
            return EcsRamRoleCredentialsProvider(
                role_name=section.get("role_name") or None,
                metadata_url=options.metadata_url,
                environ=options.environ,
                clock=options.clock,
            )
    except CredentialsSourceError:
        raise
    except AliakError as error:
        raise CredentialsSourceError(path, f"[{name}] access_key_id", fix=str(error)) from None
    raise CredentialsSourceError(
        path, f"[{name}] type", fix=f"aliak reads the types {', '.join(INI_PROFILE_TYPES)}"
    )


HISTORICAL_CREDENTIALS_FILE = Path("/.alibabacloud/credentials.ini")


class ProfileCredentialsProvider(_FileProvider):
    """A section of ``credentials.ini``: ``path``, else ``ALIBABA_CLOUD_CREDENTIALS_FILE``,
    else ``~/.alibabacloud/credentials.ini``, else ``~/.alibabacloud/credentials`` (the Go
    library's name), else (with no ``home`` given) the historical absolute
    ``/.alibabacloud/credentials.ini``; the section ``profile_name``, else
    ``ALIBABA_CLOUD_PROFILE``, else ``default``. Types: see :data:`INI_PROFILE_TYPES`."""

    def __init__(
        self,
        profile_name: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        home: str | os.PathLike[str] | None = None,
        options: SourceOptions | None = None,
    ) -> None:
        super().__init__()
        self._options = options or SourceOptions()
        env = os.environ if self._options.environ is None else self._options.environ
        self._profile_name = profile_name or env.get(ENV_PROFILE) or "default"
        self._named = path is not None or bool(env.get(ENV_CREDENTIALS_FILE))
        self.paths: tuple[Path, ...]
        if path is not None:
            self.paths = (Path(path),)
        elif env.get(ENV_CREDENTIALS_FILE):
            self.paths = (Path(env[ENV_CREDENTIALS_FILE]),)
        else:
            folder = _home(home, env) / ".alibabacloud"
            self.paths = (folder / "credentials.ini", folder / "credentials")
            if home is None:
                # The official Python library's historical absolute path, last.
                self.paths += (HISTORICAL_CREDENTIALS_FILE,)

    def _load(self) -> CredentialsProvider:
        found = next((path for path in self.paths if path.is_file()), None)
        if found is None:
            where = " or ".join(str(path) for path in self.paths)
            if self._named:
                raise CredentialsSourceError(
                    where, "", fix=f"the file {ENV_CREDENTIALS_FILE} names does not exist"
                )
            raise CredentialsNotFound(where, detail="write it, or use another source")
        sections = parse_ini(_read(found, fix="make it readable"), path=str(found))
        section = sections.get(self._profile_name)
        if section is None:
            raise CredentialsNotFound(
                f"{found}: [{self._profile_name}]",
                detail=f"add a [{self._profile_name}] section, or set {ENV_PROFILE}",
            )
        return ini_profile_provider(
            section, path=str(found), name=self._profile_name, options=self._options
        )

    def __repr__(self) -> str:
        paths = [str(path) for path in self.paths]
        return f"ProfileCredentialsProvider(paths={paths!r}, profile={self._profile_name!r})"


def _read(path: Path, *, fix: str) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        raise CredentialsNotFound(str(path), detail=fix) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
        raise CredentialsSourceError(str(path), "", fix=f"cannot read it ({reason})") from None
