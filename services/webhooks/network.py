"""Where a webhook may be sent: only to public internet addresses, unless the operator allows
private networks (`FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS`).

A tenant names the URL, and the platform connects from inside its own network, so an endpoint
must not reach what only the platform can (a metadata service at 169.254.169.254, a database on
10.0.0.5, the services themselves on 127.0.0.1). Two checks:

- `refused_url` when an endpoint is created: a scheme other than http(s), a literal address that
  is not public (in any of the forms resolvers accept: `127.1`, `0x7f000001`, `[::ffff:10.0.0.1]`)
  or a `localhost` name is refused with a reason.
- `GuardedTransport` when a delivery is sent: the host is resolved, every address it resolves to
  is checked, and the connection is made to the checked address itself, so a name that resolves
  elsewhere a moment later (DNS rebinding) changes nothing. The request still names the host:
  the Host header and TLS's server name (SNI, and the certificate check) are the URL's. One
  address of a name that is not public refuses the name (a name that mixes public and private
  addresses is not one to trust). A refusal raises `RefusedAddress`, not an `httpx` error: it is
  the operator's policy, not a failure of the network, and is not retried. The transport never
  takes a proxy from the environment (the proxy's address would be the one checked).

An address is public when it is globally routable and none of: unspecified, loopback, private,
link-local, multicast, reserved, shared (100.64.0.0/10), documentation, benchmarking. IPv6
addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, 6to4 `2002::/16`, NAT64
`64:ff9b::/96`) are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

ALLOW_SETTING = "FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Why an address is refused, None when deliveries may go there.
AddressPolicy = Callable[[IPAddress], str | None]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The legacy IPv4 forms inet_aton accepts (and so do resolvers): 127.1, 0x7f.1, 2130706433.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


logger = logging.getLogger(__name__)

class RefusedAddress(Exception):
    """The endpoint's host is, or resolves to, an address deliveries may not go to."""


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address


# Special-purpose blocks Python's `is_global` still calls global (IANA's registry says not
# forwardable or not global): the IPv4 Dummy Address and the PCP/TURN anycast addresses.
_NOT_PUBLIC_EXTRA = frozenset(ipaddress.ip_address(text) for text in (
    "192.0.0.8", "192.0.0.9", "192.0.0.10",
))


def non_public_kind(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address (None: it is one)."""
    address = embedded_ipv4(address)
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"  # fec0::/10: deprecated, but still routed inside some networks
    if address in _NOT_PUBLIC_EXTRA:
        return "reserved"
    for kind, test in (
        ("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
        ("link-local", address.is_link_local), ("multicast", address.is_multicast),
        ("reserved", address.is_reserved), ("private", address.is_private),
    ):
        if test:
            return kind
    if not address.is_global:
        return "not globally routable"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a resolver reads as one; None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def refused_url(url: str, *, allow_private_networks: bool) -> str | None:
    """Why an endpoint URL is refused when it is created (None: accepted). Names are checked
    again, resolved, at every delivery."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        return f"the url's scheme must be http or https, not {parsed.scheme or 'none'!r}"
    host = (parsed.hostname or "").rstrip(".")
    if not host:
        return "the url has no host"
    if allow_private_networks:
        return None
    address = literal_address(host)
    if address is not None and (kind := non_public_kind(address)) is not None:
        return (f"the url's host {host} is a {kind} address; webhooks go to public addresses "
                f"only unless {ALLOW_SETTING} is true")
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return (f"the url's host {host} is this machine; webhooks go to public addresses only "
                f"unless {ALLOW_SETTING} is true")
    return None


async def resolve_checked(
    host: str, port: int, *, within: float | None, refusal: AddressPolicy | None = None
) -> list[str]:
    """The addresses to connect to for `host`: resolved once, every one checked by `refusal`
    (`non_public_kind` by default). Raises `RefusedAddress`, or `httpcore.ConnectError` when
    the name does not resolve."""
    refusal = refusal or non_public_kind
    literal = literal_address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            found = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                within,
            )
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from None
        addresses = list(dict.fromkeys(
            ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found
        ))
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        if (kind := refusal(address)) is not None:
            # The reason is stored and shown to the endpoint's tenant: it names the kind of
            # address, never the address a name resolved to (that would map the operator's
            # network for anyone who can create an endpoint); the log has it for operators.
            if literal is None:
                logger.warning("webhook delivery refused: %s resolves to %s (%s)",
                               host, address, kind)
            raise RefusedAddress(
                f"refused: {host} is a {kind} address; webhooks go to public addresses "
                f"only unless {ALLOW_SETTING} is true"
                if literal is not None else
                f"refused: {host} resolves to a {kind} address; webhooks go to public "
                f"addresses only unless {ALLOW_SETTING} is true"
            )
    return [str(address) for address in addresses]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to checked addresses (see the module). `refusal`
    is the policy (`non_public_kind`); allowing private networks checks nothing."""

    def __init__(self, *, allow_private_networks: bool,
                 refusal: AddressPolicy | None = None) -> None:
        self.allow_private_networks = allow_private_networks
        self.refusal = refusal or non_public_kind
        self._inner = httpcore.AnyIOBackend()

    # `timeout` parameters: httpcore's interface.
    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None, socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allow_private_networks:
            return await self._inner.connect_tcp(
                host, port, timeout=timeout, local_address=local_address,
                socket_options=socket_options,
            )
        addresses = await resolve_checked(host, port, within=timeout, refusal=self.refusal)
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue  # the next checked address of the name
        return await self._inner.connect_tcp(
            addresses[-1], port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("refused: webhooks are never sent to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `GuardedBackend`, with no proxy from the environment."""

    def __init__(self, *, allow_private_networks: bool, verify: ssl.SSLContext | bool = True,
                 refusal: AddressPolicy | None = None,
                 limits: httpx.Limits = _LIMITS) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx builds its pool without a way to pass the network backend: built again here.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private_networks=allow_private_networks,
                                           refusal=refusal),
        )


def delivery_client(*, timeout: float, allow_private_networks: bool,
                    verify: ssl.SSLContext | bool = True,
                    refusal: AddressPolicy | None = None) -> httpx.AsyncClient:
    """The HTTP client deliveries are sent with: guarded, no redirects, no environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private_networks=allow_private_networks, verify=verify,
                                   refusal=refusal),
        timeout=timeout, follow_redirects=False, trust_env=False,
    )
