"""Who is calling, and may they: callers are identified by Kubernetes and allowed what RBAC
allows them, the way aggregated API servers do it.

Two ways in:
- **Through the Kubernetes API server** (the aggregated API, `/apis/api.drover.dev/v1/...`):
  the API server authenticates the caller however the cluster does it — client certificates,
  ServiceAccount tokens, OIDC, exec plugins — and forwards the identity in request headers
  (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-*`) over a TLS connection it opens with
  its front-proxy client certificate. Those headers are believed only on a connection whose
  client certificate chains to the front-proxy CA and names an allowed proxy; the CA and names
  come from the cluster (`kube-system/extension-apiserver-authentication`).
- **Directly**, with `Authorization: Bearer <token>` (in-cluster callers): the token is
  reviewed by the API server (TokenReview).

Either way a SubjectAccessReview then checks the Kubernetes verb on the resource in the
namespace. Answers are cached for a few seconds, as the API server's own webhook authorizer
does, so a burst of triggers costs one review.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import ConfigMap

from drover.protocol.names import GROUP
from drover_operator.api.errors import ProblemError
from drover_operator.kube import NETWORK_ERRORS

log = logging.getLogger(__name__)

_CACHE_SECONDS = 10.0
_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Caller:
    """A caller as Kubernetes knows them."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)
    #: How the identity arrived: "front-proxy" (through the API server) or "token".
    via: str = "token"


@dataclass(frozen=True)
class FrontProxy:
    """How the API server forwards identities (the request-header authentication it
    publishes in `kube-system/extension-apiserver-authentication`)."""

    client_ca: str
    allowed_names: tuple[str, ...]
    user_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    async def from_cluster(cls, client: AsyncClient) -> FrontProxy | None:
        """Read the cluster's settings; None if it publishes none (or we may not read them)."""
        try:
            found = await client.get(
                ConfigMap, "extension-apiserver-authentication", namespace="kube-system"
            )
        except (ApiError, *NETWORK_ERRORS) as exc:
            log.warning("cannot read the API server's front-proxy settings (%s)", exc)
            return None
        data = found.data or {}
        if "requestheader-client-ca-file" not in data:
            return None

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(json.loads(value)) if value else default

        return cls(
            client_ca=data["requestheader-client-ca-file"],
            allowed_names=names("requestheader-allowed-names", ()),
            user_headers=names("requestheader-username-headers", ("X-Remote-User",)),
            group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
            extra_prefixes=names("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        )

    def trusts(self, peer: dict[str, Any] | None) -> bool:
        """Whether a verified client certificate is the API server's front proxy."""
        if not peer:
            return False
        if not self.allowed_names:
            return True  # any certificate signed by the front-proxy CA
        names = {
            value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"
        }
        return bool(names & set(self.allowed_names))

    def caller(self, request: web.Request) -> Caller | None:
        user = next((request.headers[h] for h in self.user_headers if h in request.headers), "")
        if not user:
            return None
        groups = tuple(g for h in self.group_headers for g in request.headers.getall(h, []))
        extra: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            for prefix in self.extra_prefixes:
                if name.lower().startswith(prefix.lower()):
                    extra.setdefault(name[len(prefix) :].lower(), []).append(value)
        return Caller(user=user, groups=groups, extra=extra, via="front-proxy")


class Authenticator:
    """Identifies callers and checks their permissions against the cluster's RBAC."""

    def __init__(
        self,
        client: AsyncClient,
        front_proxy: FrontProxy | None = None,
        audiences: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.front_proxy = front_proxy
        self.audiences = audiences
        self._tokens: dict[str, tuple[float, Caller]] = {}
        self._allowed: dict[tuple[Any, ...], tuple[float, bool]] = {}

    def trust_context(self, context: ssl.SSLContext) -> None:
        """Make a TLS server context ask for client certificates and trust the front-proxy
        CA for them (a caller without a certificate is still served: it may send a token)."""
        if self.front_proxy is None:
            return
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=self.front_proxy.client_ca)

    async def identify(self, request: web.Request) -> Caller:
        """The caller, or 401."""
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if self.front_proxy is not None and self.front_proxy.trusts(peer):
            caller = self.front_proxy.caller(request)
            if caller is None:
                raise ProblemError(401, "unauthenticated", "the API server forwarded no user")
            return caller
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or not token:
            raise ProblemError(
                401,
                "unauthenticated",
                "a Kubernetes identity is required: call through the Kubernetes API server "
                "(/apis/api.drover.dev/v1/...) or send `Authorization: Bearer <token>`",
            )
        return await self._review(token)

    async def _review(self, token: str) -> Caller:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        spec = TokenReviewSpec(token=token, audiences=list(self.audiences) or None)
        try:
            review = await self.client.create(TokenReview(spec=spec))
        except (ApiError, *NETWORK_ERRORS) as exc:
            raise ProblemError(503, "unavailable", f"token review failed: {exc}") from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            raise ProblemError(401, "unauthenticated", "Kubernetes did not accept the token")
        user = status.user
        caller = Caller(
            user=user.username or "",
            groups=tuple(user.groups or ()),
            uid=user.uid,
            extra={k: list(v) for k, v in (user.extra or {}).items()},
        )
        self._remember(self._tokens, key, caller)
        return caller

    async def allowed(
        self,
        caller: Caller,
        namespace: str | None,
        verb: str,
        resource: str,
        name: str | None = None,
    ) -> bool:
        """Whether RBAC lets the caller `verb` the resource in `namespace` (None: at the
        cluster scope, i.e. in every namespace, as `kubectl get -A` needs)."""
        key = (caller.user, caller.groups, caller.uid, namespace, verb, resource, name)
        cached = self._allowed.get(key)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        review = SubjectAccessReview(
            spec=SubjectAccessReviewSpec(
                user=caller.user,
                groups=list(caller.groups),
                uid=caller.uid,
                extra=caller.extra or None,
                resourceAttributes=ResourceAttributes(
                    group=GROUP, resource=resource, verb=verb, namespace=namespace, name=name
                ),
            )
        )
        try:
            answer = await self.client.create(review)
        except (ApiError, *NETWORK_ERRORS) as exc:
            raise ProblemError(503, "unavailable", f"access review failed: {exc}") from None
        allowed = answer.status is not None and bool(answer.status.allowed)
        self._remember(self._allowed, key, allowed)
        return allowed

    def _remember(self, cache: dict[Any, tuple[float, Any]], key: Any, value: Any) -> None:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = (time.monotonic(), value)


AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)


async def authorize(
    request: web.Request,
    namespace: str | None,
    verb: str = "get",
    resource: str = "taskruns",
    name: str | None = None,
) -> Caller:
    """The caller, if RBAC lets them `verb` `resource` (of drover.dev) in `namespace` (None:
    in every namespace); otherwise 401 or 403 naming what is missing."""
    auth = request.app[AUTH]
    caller = await auth.identify(request)
    if not await auth.allowed(caller, namespace, verb, resource, name):
        where = f'in namespace "{namespace}"' if namespace is not None else "at the cluster scope"
        raise ProblemError(
            403, "forbidden", f"{caller.user} cannot {verb} {resource}.{GROUP} {where}"
        )
    return caller
