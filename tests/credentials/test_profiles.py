"""config.json and credentials.ini: every mode/type, the errors (file, field, fix; never a
value), and differential reads of the same files by alibabacloud-credentials."""

from __future__ import annotations

import contextlib
import json
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.provider.cli_profile import (
    CLIProfileCredentialsProvider as OfficialCli,
)
from alibabacloud_credentials.provider.profile import ProfileCredentialsProvider as OfficialIni
from alibabacloud_credentials.utils import auth_constant
from hypothesis import given, settings
from hypothesis import strategies as st

from aliak import (
    AccessKey,
    CLIProfileCredentialsProvider,
    CredentialsSourceError,
    CredentialsURIProvider,
    EcsRamRoleCredentialsProvider,
    OIDCRoleArnCredentialsProvider,
    ProfileCredentialsProvider,
    RamRoleArnCredentialsProvider,
    StsCredential,
)
from aliak.credentials import CredentialsNotFound, SourceOptions, cli_profile_provider, parse_ini

SECRET = "profile-secret-never-shown"
PROFILES: list[dict[str, Any]] = [
    {"name": "default", "mode": "AK", "access_key_id": "LTAIdefault", "access_key_secret": SECRET},
    {"name": "sts", "mode": "StsToken", "access_key_id": "STS.x", "access_key_secret": SECRET, "sts_token": "CAIStoken"},
    {
        "name": "role", "mode": "RamRoleArn", "access_key_id": "LTAIrole", "access_key_secret": SECRET,
        "ram_role_arn": "acs:ram::123:role/x", "ram_session_name": "s", "expired_seconds": 1800,
        "external_id": "ext", "sts_region": "cn-hangzhou", "enable_vpc": True, "policy": "{}",
    },
    {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "rolename"},
    {
        "name": "rrsa", "mode": "OIDC", "ram_role_arn": "acs:ram::123:role/o",
        "oidc_provider_arn": "acs:ram::123:oidc-provider/p", "oidc_token_file": "/var/run/token",
        "role_session_name": "pod",
    },
    {"name": "chain", "mode": "ChainableRamRoleArn", "source_profile": "default", "ram_role_arn": "acs:ram::123:role/c"},
    {"name": "uri", "mode": "CredentialsURI", "credentials_uri": "http://127.0.0.1:9/creds"},
    {"name": "ext", "mode": "External", "process_command": "echo"},
]  # fmt: skip
CONFIG = {"current": "default", "profiles": PROFILES}


def write_config(home: Path, config: object) -> Path:
    path = home / ".aliyun" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def cli(home: Path, name: str | None = None) -> CLIProfileCredentialsProvider:
    return CLIProfileCredentialsProvider(name, home=home, options=SourceOptions(environ={}))


def test_the_current_profile_is_read_by_default(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    credential = cli(tmp_path).get_credential()
    assert credential == AccessKey("LTAIdefault", SECRET)


def test_the_profile_variable_picks_a_profile(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    provider = CLIProfileCredentialsProvider(
        home=tmp_path, options=SourceOptions(environ={"ALIBABA_CLOUD_PROFILE": "sts"})
    )
    assert provider.get_credential() == StsCredential("STS.x", SECRET, "CAIStoken")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("role", RamRoleArnCredentialsProvider),
        ("ecs", EcsRamRoleCredentialsProvider),
        ("rrsa", OIDCRoleArnCredentialsProvider),
        ("chain", RamRoleArnCredentialsProvider),
        ("uri", CredentialsURIProvider),
    ],
)
def test_each_network_mode_builds_its_provider(tmp_path: Path, name: str, kind: type) -> None:
    write_config(tmp_path, CONFIG)
    assert isinstance(cli(tmp_path, name).provider, kind)


def test_a_ram_role_profile_reads_every_field(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    role = cli(tmp_path, "role").provider
    assert isinstance(role, RamRoleArnCredentialsProvider)
    assert role.endpoint == "https://sts-vpc.cn-hangzhou.aliyuncs.com"
    assert (role._role_arn, role._role_session_name, role._duration_seconds) == (
        "acs:ram::123:role/x",
        "s",
        1800,
    )
    assert (role._policy, role._external_id) == ("{}", "ext")


def test_chained_profiles_that_loop_are_refused(tmp_path: Path) -> None:
    profiles = [
        {"name": "a", "mode": "ChainableRamRoleArn", "source_profile": "b", "ram_role_arn": "r"},
        {"name": "b", "mode": "ChainableRamRoleArn", "source_profile": "a", "ram_role_arn": "r"},
    ]
    write_config(tmp_path, {"profiles": profiles})
    with pytest.raises(CredentialsSourceError) as caught:
        cli(tmp_path, "a").get_credential()
    assert "a -> b -> a" in str(caught.value)


@pytest.mark.parametrize(
    ("config", "field", "fix"),
    [
        ("{not json", "", "not JSON"),
        ([], "", "JSON object"),
        ({"profiles": []}, "current", "ALIBABA_CLOUD_PROFILE"),
        ({"current": "p", "profiles": {}}, "profiles", "list"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "AK", "access_key_id": "LTAIx"}]}, 'profiles[name="p"].access_key_secret', "set it"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "AK", "access_key_id": "bad id!", "access_key_secret": SECRET}]}, 'profiles[name="p"].access_key_id', "1-128"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "StsToken", "access_key_id": "STS.x", "access_key_secret": SECRET}]}, 'profiles[name="p"].sts_token', "set it"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "RamRoleArn", "access_key_id": "LTAIx", "access_key_secret": SECRET, "ram_role_arn": "r", "expired_seconds": "1h"}]}, 'profiles[name="p"].expired_seconds', "seconds"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "RamRoleArn", "access_key_id": "LTAIx", "access_key_secret": SECRET, "ram_role_arn": "r", "expired_seconds": 60}]}, 'profiles[name="p"].expired_seconds', "900"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "RamRoleArn", "access_key_id": "LTAIx", "access_key_secret": SECRET}]}, 'profiles[name="p"].ram_role_arn', "set it"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "CloudSSO"}]}, 'profiles[name="p"].mode', "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"),
        ({"current": "p", "profiles": [{"name": "p", "mode": "OIDC", "ram_role_arn": "r", "oidc_provider_arn": "p", "oidc_token_file": "/t", "enable_vpc": "yes"}]}, 'profiles[name="p"].enable_vpc', "true or false"),
    ],
)  # fmt: skip
def test_a_malformed_config_names_the_file_the_field_and_the_fix(
    tmp_path: Path, config: object, field: str, fix: str
) -> None:
    path = write_config(tmp_path, config)
    with pytest.raises(CredentialsSourceError) as caught:
        cli(tmp_path).get_credential()
    named = f"{path}: {field}" if field else str(path)
    assert caught.value.message == f'The specified parameter "{named}" is not valid.'
    assert fix in (caught.value.detail or "")
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_an_absent_file_or_profile_is_not_found_not_malformed(tmp_path: Path) -> None:
    with pytest.raises(CredentialsNotFound) as caught:
        cli(tmp_path).get_credential()
    assert "config.json" in caught.value.message
    write_config(tmp_path, CONFIG)
    with pytest.raises(CredentialsNotFound) as caught:
        cli(tmp_path, "nope").get_credential()
    assert 'profiles[name="nope"]' in caught.value.message


def test_the_switch_turns_the_cli_file_off(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    provider = CLIProfileCredentialsProvider(
        home=tmp_path, options=SourceOptions(environ={"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "TRUE"})
    )
    with pytest.raises(CredentialsNotFound):
        provider.get_credential()


# -- credentials.ini -------------------------------------------------------------------

INI = f"""
[default]
type = access_key
access_key_id = LTAIini  # a comment
access_key_secret = {SECRET}

[role]
type = ram_role_arn
access_key_id = LTAIini
access_key_secret = {SECRET}
role_arn = acs:ram::123:role/r
role_session_name = ini-session

[rrsa]
type = oidc_role_arn
role_arn = acs:ram::123:role/o
oidc_provider_arn = acs:ram::123:oidc-provider/p
oidc_token_file_path = /var/run/token

[ecs]
type = ecs_ram_role
role_name = EcsRole

[rsa]
type = rsa_key_pair
public_key_id = x
private_key_file = /k
"""


def ini(
    tmp_path: Path, name: str | None = None, environ: dict[str, str] | None = None
) -> ProfileCredentialsProvider:
    return ProfileCredentialsProvider(
        name, home=tmp_path, options=SourceOptions(environ=environ or {})
    )


@pytest.mark.parametrize("filename", ["credentials.ini", "credentials"])
def test_the_ini_file_is_found_with_or_without_its_extension(tmp_path: Path, filename: str) -> None:
    path = tmp_path / ".alibabacloud" / filename
    path.parent.mkdir()
    path.write_text(INI)
    assert ini(tmp_path).get_credential() == AccessKey("LTAIini", SECRET)


def test_the_historical_absolute_path_is_read_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aliak.credentials import _profiles

    historical = tmp_path / "root" / ".alibabacloud" / "credentials.ini"
    historical.parent.mkdir(parents=True)
    historical.write_text(INI)
    monkeypatch.setattr(_profiles, "HISTORICAL_CREDENTIALS_FILE", historical)
    home = tmp_path / "home"
    home.mkdir()
    provider = ProfileCredentialsProvider(options=SourceOptions(environ={"HOME": str(home)}))
    assert provider.paths[-1] == historical
    assert provider.get_credential() == AccessKey("LTAIini", SECRET)
    # The home directory's file, when there is one, comes first.
    (home / ".alibabacloud").mkdir()
    (home / ".alibabacloud" / "credentials.ini").write_text(INI.replace("LTAIini", "LTAIhome"))
    provider = ProfileCredentialsProvider(options=SourceOptions(environ={"HOME": str(home)}))
    assert provider.get_credential().access_key_id == "LTAIhome"


def test_the_credentials_file_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.ini"
    path.write_text(INI)
    provider = ini(tmp_path, environ={"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path)})
    assert provider.get_credential().access_key_id == "LTAIini"
    missing = ini(tmp_path, environ={"ALIBABA_CLOUD_CREDENTIALS_FILE": str(tmp_path / "gone")})
    with pytest.raises(CredentialsSourceError) as caught:
        missing.get_credential()
    assert "ALIBABA_CLOUD_CREDENTIALS_FILE" in (caught.value.detail or "")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("role", RamRoleArnCredentialsProvider),
        ("rrsa", OIDCRoleArnCredentialsProvider),
        ("ecs", EcsRamRoleCredentialsProvider),
    ],
)
def test_each_ini_type_builds_its_provider(tmp_path: Path, name: str, kind: type) -> None:
    (tmp_path / ".alibabacloud").mkdir()
    (tmp_path / ".alibabacloud" / "credentials.ini").write_text(INI)
    assert isinstance(ini(tmp_path, name).provider, kind)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (INI, "[rsa] type"),
        ("[default]\ntype = access_key\naccess_key_id = LTAIx\n", "[default] access_key_secret"),
        (f"access_key_secret = {SECRET}\n", "line 1"),
        (f"[default]\n{SECRET}\n", "line 2"),
        ("[default]\na = 1\na = 2\n", "line 3"),
    ],
)
def test_a_malformed_ini_names_the_field_or_line_never_the_value(
    tmp_path: Path, text: str, field: str
) -> None:
    (tmp_path / ".alibabacloud").mkdir()
    path = tmp_path / ".alibabacloud" / "credentials.ini"
    path.write_text(text)
    name = "rsa" if text == INI else None
    with pytest.raises(CredentialsSourceError) as caught:
        ini(tmp_path, name).get_credential()
    assert caught.value.message == f'The specified parameter "{path}: {field}" is not valid.'
    assert SECRET not in str(caught.value)


def test_an_ini_section_that_is_absent_is_not_found(tmp_path: Path) -> None:
    (tmp_path / ".alibabacloud").mkdir()
    (tmp_path / ".alibabacloud" / "credentials.ini").write_text(INI)
    with pytest.raises(CredentialsNotFound) as caught:
        ini(tmp_path, "absent").get_credential()
    assert "[absent]" in caught.value.message


@given(
    st.dictionaries(
        st.text(string.ascii_lowercase, min_size=1, max_size=8),
        st.text(string.ascii_letters + string.digits + "-_.%/ ", max_size=20),
        max_size=5,
    )
)
def test_ini_values_round_trip_stripped(values: dict[str, str]) -> None:
    text = "[s]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
    assert parse_ini(text, path="p") == {"s": {key: value.strip() for key, value in values.items()}}


@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_source_error(text: str) -> None:
    with contextlib.suppress(CredentialsSourceError):
        parse_ini(text, path="p")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["current", "profiles", "name", "mode", "access_key_id", "access_key_secret"]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_config_gives_a_provider_or_an_aliak_error(config: object) -> None:
    try:
        cli_profile_provider(config, None, path="config.json", options=SourceOptions(environ={}))
    except (CredentialsSourceError, CredentialsNotFound):
        pass
    except Exception as error:  # a malformed id is an AliakError too, but named by file
        raise AssertionError(f"{type(error).__name__} escaped") from error


# -- differential: the same files read by alibabacloud-credentials -----------------------

KEY_TEXT = st.text(string.ascii_letters + string.digits, min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(key_id=KEY_TEXT, secret=KEY_TEXT, token=st.none() | KEY_TEXT)
def test_the_official_library_reads_the_same_config_json_credential(
    key_id: str, secret: str, token: str | None
) -> None:
    profile = {
        "name": "p",
        "mode": "StsToken" if token else "AK",
        "access_key_id": key_id,
        "access_key_secret": secret,
    }
    if token:
        profile["sts_token"] = token
    with tempfile.TemporaryDirectory() as home, pytest.MonkeyPatch.context() as patch:
        path = write_config(Path(home), {"current": "p", "profiles": [profile]})
        patch.setattr(auth_constant, "HOME", home)
        official = OfficialCli(profile_name="p").get_credentials()
        ours = cli(Path(home)).get_credential()
        assert str(path) == str(OfficialCli()._profile_file)
    assert ours.access_key_id == official.get_access_key_id()
    assert ours.secret.reveal() == official.get_access_key_secret()
    assert (
        ours.security_token.reveal() if isinstance(ours, StsCredential) else None
    ) == official.get_security_token()


@settings(max_examples=40, deadline=None)
@given(
    key_id=KEY_TEXT,
    secret=KEY_TEXT,
    section=st.sampled_from(["default", "prod"]),
    comment=st.booleans(),
)
def test_the_official_library_reads_the_same_credentials_ini(
    key_id: str, secret: str, section: str, comment: bool
) -> None:
    tail = "   # rotated yesterday" if comment else ""
    text = f"[{section}]\ntype = access_key\naccess_key_id = {key_id}{tail}\naccess_key_secret = {secret}\n"
    with tempfile.TemporaryDirectory() as home, pytest.MonkeyPatch.context() as patch:
        path = Path(home) / ".alibabacloud" / "credentials.ini"
        path.parent.mkdir()
        path.write_text(text)
        patch.setattr(auth_constant, "HOME", home)
        official = OfficialIni(profile_name=section).get_credentials()
        ours = ini(Path(home), section).get_credential()
    assert (ours.access_key_id, ours.secret.reveal()) == (
        official.get_access_key_id(),
        official.get_access_key_secret(),
    )


def official_role(config: dict[str, Any], name: str) -> Any:
    return OfficialCli(profile_file="unused")._get_credentials_provider(config, name)


@pytest.mark.parametrize("name", ["role", "chain"])
def test_the_official_library_reads_the_same_ram_role_profile(tmp_path: Path, name: str) -> None:
    write_config(tmp_path, CONFIG)
    ours = cli(tmp_path, name).provider
    theirs = official_role(CONFIG, name)
    assert isinstance(ours, RamRoleArnCredentialsProvider)
    assert ours.endpoint == f"https://{theirs._sts_endpoint}"
    assert ours._role_arn == theirs._role_arn
    assert ours._duration_seconds == theirs._duration_seconds
    assert (ours._policy, ours._external_id) == (theirs._policy, theirs._external_id)
    if name == "role":
        assert ours._role_session_name == theirs._role_session_name
    base = ours._base.get_credential()
    their_base = theirs._credentials_provider.get_credentials()
    assert (base.access_key_id, base.secret.reveal()) == (
        their_base.get_access_key_id(),
        their_base.get_access_key_secret(),
    )


def test_the_official_library_reads_the_same_oidc_profile(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    ours = cli(tmp_path, "rrsa").provider
    theirs = official_role(CONFIG, "rrsa")
    assert isinstance(ours, OIDCRoleArnCredentialsProvider)
    assert (ours._role_arn, ours._oidc_provider_arn, str(ours._token_file), ours._role_session_name) == (
        theirs._role_arn, theirs._oidc_provider_arn, theirs._oidc_token_file_path, theirs._role_session_name,
    )  # fmt: skip
    assert ours.endpoint == f"https://{theirs._sts_endpoint}"
