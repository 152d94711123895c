"""The provider chain: sources tried in order, the first with a credential kept.

:class:`DefaultCredentialsProvider` is the official order (spec ``credentials-chain.md``
§2.1): environment variables; RRSA (only when its three variables are set);
``~/.aliyun/config.json``; ``credentials.ini``; the ECS instance role (unless
``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true``); ``ALIBABA_CLOUD_CREDENTIALS_URI`` (only
when set).

A source that is *absent* (:class:`CredentialsNotFound`) or *unreachable*
(:class:`CredentialsUnavailable`: not on ECS, say) is passed over, as the official
library does. Unlike it, a source that is there but *malformed*
(:class:`CredentialsSourceError`, or a bad key in the environment) stops the chain:
falling through to the next source would sign as another identity than the one
configured. The source that answered is kept, as the official library's
``reuse_last_provider_enabled`` does, and asked directly from then on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping, Sequence

from aliak.credentials._ecs import EcsRamRoleCredentialsProvider
from aliak.credentials._environment import (
    ENV_CREDENTIALS_URI,
    ENV_ECS_METADATA_DISABLED,
    ENV_OIDC_PROVIDER_ARN,
    ENV_OIDC_TOKEN_FILE,
    ENV_ROLE_ARN,
    EnvironmentCredentialsProvider,
    env_flag,
)
from aliak.credentials._errors import CredentialsNotFound, CredentialsUnavailable
from aliak.credentials._profiles import (
    CLIProfileCredentialsProvider,
    ProfileCredentialsProvider,
    SourceOptions,
)
from aliak.credentials._sts import OIDCRoleArnCredentialsProvider
from aliak.credentials._uri import CredentialsURIProvider
from aliak.credentials._values import Credential, CredentialsProvider
from aliak.timestamps import Clock, system_clock

__all__ = ["CredentialsProviderChain", "DefaultCredentialsProvider"]

ProviderFactory = Callable[[], CredentialsProvider]


class CredentialsProviderChain:
    """Tries ``sources`` in order: each a zero-argument callable returning a provider (a
    provider class itself, or a ``lambda``), built and asked only when its turn comes.

    When none has a credential, :class:`CredentialsNotFound` lists why, source by source.
    """

    def __init__(self, sources: Sequence[ProviderFactory]) -> None:
        self._sources = tuple(sources)
        self._provider: CredentialsProvider | None = None
        self._lock = threading.Lock()

    @property
    def provider(self) -> CredentialsProvider | None:
        """The source that answered, once one has."""
        return self._provider

    def get_credential(self) -> Credential:
        provider = self._provider
        if provider is not None:
            return provider.get_credential()
        return self._resolve()

    async def get_credential_async(self) -> Credential:
        provider = self._provider
        if provider is None:
            await asyncio.to_thread(self._resolve)
            provider = self._provider
        assert provider is not None
        method = getattr(provider, "get_credential_async", None)
        if method is not None:
            credential: Credential = await method()
            return credential
        return provider.get_credential()

    def _resolve(self) -> Credential:
        with self._lock:
            if self._provider is not None:
                return self._provider.get_credential()
            reasons = []
            for factory in self._sources:
                try:
                    provider = factory()
                    credential = provider.get_credential()
                except CredentialsNotFound as error:
                    reasons.append(f"{error.parameter}: not found ({error.detail})")
                    continue
                except CredentialsUnavailable as error:
                    reasons.append(f"{error.source}: unavailable ({error.detail})")
                    continue
                self._provider = provider
                return credential
        raise CredentialsNotFound(
            "credentials",
            detail="no source of the chain has one: " + "; ".join(reasons),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self._provider!r})"


class DefaultCredentialsProvider(CredentialsProviderChain):
    """The official chain. ``environ`` and ``home`` stand in for :data:`os.environ` and
    the home folder (tests); ``profile_name`` picks the profile of both files (default:
    ``ALIBABA_CLOUD_PROFILE``, then config.json's ``current`` and the ini's ``default``);
    ``sts_endpoint``/``metadata_url`` point the network sources elsewhere."""

    def __init__(
        self,
        *,
        profile_name: str | None = None,
        environ: Mapping[str, str] | None = None,
        home: str | os.PathLike[str] | None = None,
        clock: Clock = system_clock,
        sts_endpoint: str | None = None,
        metadata_url: str | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        options = SourceOptions(clock=clock, environ=env, sts_endpoint=sts_endpoint)
        if metadata_url is not None:
            options = SourceOptions(
                clock=clock, environ=env, sts_endpoint=sts_endpoint, metadata_url=metadata_url
            )
        sources: list[ProviderFactory] = [lambda: EnvironmentCredentialsProvider(env)]
        if all(
            env.get(name) for name in (ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE)
        ):
            sources.append(
                lambda: OIDCRoleArnCredentialsProvider.from_environment(
                    env, clock=clock, sts_endpoint=sts_endpoint
                )
            )
        sources.append(
            lambda: CLIProfileCredentialsProvider(profile_name, home=home, options=options)
        )
        sources.append(lambda: ProfileCredentialsProvider(profile_name, home=home, options=options))
        if not env_flag(env, ENV_ECS_METADATA_DISABLED):
            sources.append(
                lambda: EcsRamRoleCredentialsProvider(
                    metadata_url=options.metadata_url, environ=env, clock=clock
                )
            )
        if env.get(ENV_CREDENTIALS_URI):
            sources.append(lambda: CredentialsURIProvider.from_environment(env, clock=clock))
        super().__init__(sources)
