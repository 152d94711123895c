"""The ECS instance RAM role, from the instance metadata service (spec
``credentials-chain.md`` §2.3): IMDSv2 first (a session token from ``PUT
/latest/api/token``, sent with every read), IMDSv1 (no token) when that fails, unless
``disable_imds_v1`` / ``ALIBABA_CLOUD_IMDSV1_DISABLED=true`` forbids it.

Prefetched like the official library's: a background refresh an hour after each fetch
(instance credentials last hours), and a job that looks once a minute so the credential
is renewed even when nothing signs for a while.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping

from aliak.credentials._environment import ENV_ECS_METADATA, ENV_IMDSV1_DISABLED, env_flag
from aliak.credentials._errors import CredentialsUnavailable
from aliak.credentials._http import Response, fetch, json_object
from aliak.credentials._refresh import RefreshingCredentialsProvider
from aliak.credentials._sts import credential_from_answer
from aliak.credentials._values import Credential
from aliak.timestamps import Clock, system_clock

__all__ = ["METADATA_URL", "EcsRamRoleCredentialsProvider"]

METADATA_URL = "http://100.100.100.200"
_TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path
_CREDENTIALS_PATH = "/latest/meta-data/ram/security-credentials/"
_TOKEN_TTL = "21600"  # noqa: S105 - seconds, the official library's: six hours
_TOKEN_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"  # noqa: S105 - a header name
_TOKEN_HEADER = "X-aliyun-ecs-metadata-token"  # noqa: S105 - a header name
_PREFETCH_AFTER = 60 * 60.0
_JOB_INTERVAL = 60.0


class EcsRamRoleCredentialsProvider(RefreshingCredentialsProvider):
    """The RAM role attached to this ECS instance.

    ``role_name`` defaults to ``ALIBABA_CLOUD_ECS_METADATA``, else it is asked of the
    metadata service. ``metadata_url`` points elsewhere for tests. ``background_refresh``
    starts the once-a-minute job after the first fetch (a daemon thread; :meth:`close`
    stops it). Timeouts are the official library's, one second.
    """

    source = "the ECS instance metadata service"

    def __init__(
        self,
        *,
        role_name: str | None = None,
        disable_imds_v1: bool | None = None,
        metadata_url: str = METADATA_URL,
        environ: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        timeout: float = 1.0,
        background_refresh: bool = True,
        job_interval: float = _JOB_INTERVAL,
        prefetch_after: float = _PREFETCH_AFTER,
    ) -> None:
        super().__init__(clock=clock, prefetch_after=prefetch_after)
        env = os.environ if environ is None else environ
        self.role_name = role_name or env.get(ENV_ECS_METADATA) or None
        self._disable_imds_v1 = (
            env_flag(env, ENV_IMDSV1_DISABLED) if disable_imds_v1 is None else disable_imds_v1
        )
        self._url = metadata_url.rstrip("/")
        self._timeout = timeout
        self._background_refresh = background_refresh
        self._job_interval = job_interval
        self._job: threading.Thread | None = None
        self._stop = threading.Event()

    def fetch(self) -> Credential:
        token = self._session_token()
        role = self.role_name or self._read(_CREDENTIALS_PATH, token).text().strip()
        if not role or "/" in role:
            raise CredentialsUnavailable(self.source, detail="no RAM role is attached to it")
        response = self._read(_CREDENTIALS_PATH + role, token)
        answer = json_object(response, source=self.source)
        if answer.get("Code") != "Success":
            raise CredentialsUnavailable(
                self.source, detail=f"role {role!r}: Code {answer.get('Code')!r}"
            )
        credential = credential_from_answer(answer, source=self.source)
        self._start_job()
        return credential

    def _session_token(self) -> str | None:
        """IMDSv2's token; ``None`` (IMDSv1) if it cannot be had and v1 is allowed."""
        try:
            response = fetch(
                "PUT",
                self._url + _TOKEN_PATH,
                source=self.source,
                headers={_TOKEN_TTL_HEADER: _TOKEN_TTL},
                timeout=self._timeout,
            )
            if response.status != 200:
                raise CredentialsUnavailable(
                    self.source, detail=f"the IMDSv2 token: HTTP {response.status}"
                )
        except CredentialsUnavailable:
            if self._disable_imds_v1:
                raise
            return None
        return response.text().strip()

    def _read(self, path: str, token: str | None) -> Response:
        response = self._get(path, token)
        if response.status != 200 and token is not None and not self._disable_imds_v1:
            response = self._get(path, None)  # the official fallback: the same read, v1
        if response.status != 200:
            raise CredentialsUnavailable(self.source, detail=f"GET {path}: HTTP {response.status}")
        return response

    def _get(self, path: str, token: str | None) -> Response:
        headers = {} if token is None else {_TOKEN_HEADER: token}
        return fetch(
            "GET", self._url + path, source=self.source, headers=headers, timeout=self._timeout
        )

    # -- the background job ------------------------------------------------------

    def _start_job(self) -> None:
        if not self._background_refresh or self._job is not None or self._stop.is_set():
            return
        self._job = threading.Thread(
            target=_run_job,
            args=(weakref.ref(self), self._stop, self._job_interval),
            name="aliak-ecs-credentials",
            daemon=True,
        )
        self._job.start()

    def close(self) -> None:
        """Stop the background job (it also ends with the provider, or the process)."""
        self._stop.set()
        job = self._job
        if job is not None and job is not threading.current_thread():
            job.join()


def _run_job(
    provider: weakref.ref[EcsRamRoleCredentialsProvider], stop: threading.Event, interval: float
) -> None:
    # A weak reference: the job must not keep a provider nobody uses alive forever.
    while not stop.wait(interval):
        current = provider()
        if current is None:
            return
        current.refresh_if_due()
        del current
