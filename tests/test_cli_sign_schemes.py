"""``aliak sign --scheme RPC|ROA``, run as a user would run it.

The command reads the clock and the CSPRNG, so its signatures cannot be compared with
fixed values: each printed request is checked by recomputing its signature from what was
printed with ``aliyun-python-sdk-core``'s own composers, so the output is both what aliak
signed and what the official SDK would accept as signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from aliyunsdkcore.auth.algorithm import sha_hmac1
from aliyunsdkcore.auth.composer import roa_signature_composer, rpc_signature_composer

sdk_rpc_string_to_sign = getattr(rpc_signature_composer, "__compose_string_to_sign")

AK = "LTAIexample0000000001"
SECRET = "cli-secret-not-real-0000000001"
TOKEN = "v1.cli-token-value"
CREDENTIALS = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}
STS = {**CREDENTIALS, "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.cli0001", "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN}  # fmt: skip
FORM = "application/x-www-form-urlencoded"


def run_sign(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``aliak sign ARGS`` with only the given ALIBABA_CLOUD_* variables; never a traceback."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALIAK_", "ALIBABA_CLOUD_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "aliak", "sign", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**clean, **(CREDENTIALS if env is None else env)},
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = run_sign(tmp_path, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stdout


def printed(text: str) -> tuple[str, str, dict[str, str]]:
    """Method, URL and headers of the plain-text output."""
    first, *rest = text.splitlines()
    method, url = first.split(" ", 1)
    return method, url, dict(line.split(": ", 1) for line in rest)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def sdk_rpc_signature(method: str, params: dict[str, str]) -> str:
    unsigned = {name: value for name, value in params.items() if name != "Signature"}
    return str(sha_hmac1.get_sign_string(sdk_rpc_string_to_sign(method, unsigned), SECRET + "&"))


def test_rpc_prints_the_signed_url_and_only_host(tmp_path: Path) -> None:
    out = ok(
        tmp_path, "GET", "https://ecs.aliyuncs.com/?RegionId=cn-hangzhou&Name=a b*~",
        "--scheme", "RPC", "--action", "DescribeRegions", "--version", "2014-05-26",
    )  # fmt: skip
    method, url, headers = printed(out)
    assert method == "GET"
    assert url.startswith("https://ecs.aliyuncs.com/?AccessKeyId=")
    assert "Name=a%20b%2A~" in url  # the canonical query, as signed
    assert headers == {"host": "ecs.aliyuncs.com"}
    params = query_of(url)
    assert set(params) == {
        "RegionId", "Name", "Action", "Version", "Format", "AccessKeyId", "SignatureMethod",
        "SignatureVersion", "SignatureNonce", "Timestamp", "Signature",
    }  # fmt: skip
    assert (params["Action"], params["Version"], params["Format"]) == (
        "DescribeRegions",
        "2014-05-26",
        "JSON",
    )
    assert params["Signature"] == sdk_rpc_signature("GET", params)


def test_rpc_signs_form_data_and_prints_a_curl_command_that_sends_it(tmp_path: Path) -> None:
    out = ok(
        tmp_path, "POST", "https://ecs.aliyuncs.com/", "--scheme", "RPC",
        "--data", "InstanceName=web+1&Description=%E9%98%BF", "-H", f"Content-Type: {FORM}",
        "--action", "CreateInstance", "--version", "2014-05-26", "--curl",
    )  # fmt: skip
    (line,) = out.splitlines()
    words = shlex.split(line)
    assert words[:6] == ["curl", "--globoff", "--path-as-is", "-X", "POST", "-H"]
    assert words[words.index("--data-binary") + 1] == "InstanceName=web+1&Description=%E9%98%BF"
    params = query_of(words[-1])
    assert "InstanceName" not in params  # form parameters stay in the body, signed
    signed = params | {"InstanceName": "web 1", "Description": "阿"}
    assert params["Signature"] == sdk_rpc_signature("POST", signed)


def test_roa_prints_every_header_and_an_authorization_the_sdk_agrees_with(
    tmp_path: Path,
) -> None:
    out = ok(
        tmp_path, "POST", "https://cs.aliyuncs.com/clusters/c-1/attach?b=2&a=x%20y&empty=",
        "--scheme", "ROA", "--data", '{"instances": ["i-1"]}',
        "-H", "Content-Type: application/json", "-H", "Accept: application/json",
        "-H", "X-Acs-Meta-Team: ops",
        "--action", "AttachInstances", "--version", "2015-12-15", "--json",
    )  # fmt: skip
    shown = json.loads(out)
    headers = dict(shown["Headers"])
    assert shown["Url"] == "https://cs.aliyuncs.com/clusters/c-1/attach?a=x%20y&b=2&empty="
    expected_md5 = base64.b64encode(hashlib.md5(b'{"instances": ["i-1"]}').digest()).decode()
    assert headers["Content-MD5"] == expected_md5
    assert headers["x-acs-action"] == "AttachInstances"
    assert headers["x-acs-version"] == "2015-12-15"
    assert headers["x-acs-signature-method"] == "HMAC-SHA1"
    sdk_string_to_sign = roa_signature_composer.compose_string_to_sign(
        method="POST",
        queries={"a": "x y", "b": "2", "empty": ""},
        uri_pattern="/clusters/c-1/attach",
        headers={name: value for name, value in headers.items() if name != "Authorization"},
        paths=None,
    )
    assert "x-acs-meta-team:ops\n" in sdk_string_to_sign
    signature = sha_hmac1.get_sign_string(sdk_string_to_sign, SECRET)
    assert headers["Authorization"] == f"acs {AK}:{signature}"


@pytest.mark.parametrize(
    ("scheme", "warning", "where"),
    [
        ("RPC", "the SecurityToken parameter printed is a credential", "url"),
        ("ROA", "the x-acs-security-token header printed is a credential", "headers"),
    ],
)
def test_an_sts_credential_is_signed_and_the_printed_token_is_warned_about(
    tmp_path: Path, scheme: str, warning: str, where: str
) -> None:
    result = run_sign(tmp_path, "GET", "https://sts.aliyuncs.com/", "--scheme", scheme, env=STS)
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    _, url, headers = printed(result.stdout)
    if where == "url":
        assert query_of(url)["SecurityToken"] == TOKEN
    else:
        assert headers["x-acs-security-token"] == TOKEN
        assert headers["x-acs-accesskey-id"] == "STS.cli0001"


@pytest.mark.parametrize(
    ("scheme", "algorithm"),
    [
        ("RPC", "ACS3-HMAC-SHA256"),
        ("ROA", "ACS3-HMAC-SM3"),
        ("ACS3", "HMAC-SHA1"),
    ],
)
def test_an_algorithm_outside_the_scheme_is_a_usage_error(
    tmp_path: Path, scheme: str, algorithm: str
) -> None:
    result = run_sign(tmp_path, "GET", "https://h/", "--scheme", scheme, "--algorithm", algorithm)
    assert result.returncode == 2
    assert "usage: aliak sign" in result.stderr
    assert f"--scheme {scheme} signs with" in result.stderr


@pytest.mark.parametrize("arguments", [["--scheme", "V2"], ["--algorithm", "SHA256withRSA"]])
def test_unknown_choices_are_usage_errors(tmp_path: Path, arguments: list[str]) -> None:
    result = run_sign(tmp_path, "GET", "https://h/", *arguments)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_rpc_refuses_a_path_other_than_the_root_in_one_line(tmp_path: Path) -> None:
    result = run_sign(tmp_path, "GET", "https://ecs.aliyuncs.com/things", "--scheme", "RPC")
    assert result.returncode == 1
    assert result.stderr.startswith('error: InvalidParameter: The specified parameter "path"')
    assert result.stdout == ""


def test_acs3_stays_the_default_and_takes_its_algorithms(tmp_path: Path) -> None:
    default = printed(ok(tmp_path, "GET", "https://h/"))[2]
    assert default["Authorization"].startswith(f"ACS3-HMAC-SHA256 Credential={AK},")
    sm3 = printed(ok(tmp_path, "GET", "https://h/", "--scheme", "ACS3", "--algorithm", "ACS3-HMAC-SM3"))[2]  # fmt: skip
    assert sm3["Authorization"].startswith(f"ACS3-HMAC-SM3 Credential={AK},")
    roa = printed(ok(tmp_path, "GET", "https://h/", "--scheme", "ROA", "--algorithm", "HMAC-SHA1"))[2]  # fmt: skip
    assert roa["Authorization"].startswith(f"acs {AK}:")
