"""Where webhooks may go: the address policy and the check of an endpoint URL when it is
created (the check at send time, against real sockets, is in
tests/integration/test_webhook_guard.py)."""

from __future__ import annotations

import ipaddress

import pytest

from services.webhooks.admin import check_url
from services.webhooks.delivery import answer_error
from services.webhooks.network import (
    RefusedAddress,
    literal_address,
    non_public_kind,
    refused_url,
    resolve_checked,
)

NOT_PUBLIC = {
    "0.0.0.0": "unspecified",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "224.0.0.251": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "100.64.0.1": "not globally routable",
    "192.0.2.1": "private",
    "198.18.0.1": "private",
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "2001:db8::1": "private",
    # IPv6 carrying an IPv4 address is judged by the IPv4 address.
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a00:1::": "private",  # 6to4 of 10.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
    "fec0::1": "site-local",  # deprecated, Python calls it global, some networks route it
    "192.0.0.8": "reserved",  # IANA's dummy address, global by Python 3.11
    "192.0.0.9": "reserved",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001::200e",
          "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("text", "kind"), sorted(NOT_PUBLIC.items()))
def test_addresses_outside_the_public_internet_are_named(text: str, kind: str) -> None:
    assert non_public_kind(ipaddress.ip_address(text)) == kind


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text: str) -> None:
    assert non_public_kind(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("2130706433", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"), ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
    ("fe80::1%eth0", "fe80::1"), ("10.0.0.1", "10.0.0.1"),
])
def test_every_spelling_of_an_address_is_read_as_one(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "hooks.example.com", "10.example.com", "a1"])
def test_names_are_not_addresses(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://127.1/hook", "http://2130706433/",
    "http://0x7f000001/", "http://[::1]:9000/", "http://[::ffff:127.0.0.1]/",
    "https://169.254.169.254/latest/meta-data/", "http://10.0.0.5/", "http://0.0.0.0:80/",
    "http://localhost:8000/", "http://LOCALHOST./", "http://api.localhost/",
    "http://[fd00::1]/", "http://224.0.0.1/",
])
def test_endpoints_on_non_public_hosts_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ValueError, match="FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS"):
        check_url(url, allow_private_networks=False)
    assert check_url(url, allow_private_networks=True) == url


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "example.com/hook",
    "javascript:alert(1)", "http:///nohost",
])
def test_only_http_and_https_urls_with_a_host_are_endpoints(url: str) -> None:
    for allowed in (False, True):
        with pytest.raises(ValueError):
            check_url(url, allow_private_networks=allowed)


def test_public_names_and_addresses_are_accepted() -> None:
    for url in ("https://hooks.example.com/feedback", "http://8.8.8.8/", "https://[2606:4700::1111]/x"):
        assert check_url(url, allow_private_networks=False) == url
        assert refused_url(url, allow_private_networks=False) is None
    with pytest.raises(ValueError, match="2000"):
        check_url("https://example.com/" + "a" * 2_000, allow_private_networks=False)


def test_what_is_kept_of_an_answer_is_its_status_and_the_standard_name() -> None:
    assert answer_error(500) == "HTTP 500 Internal Server Error"
    assert answer_error(302) == "HTTP 302 Found (redirects are not followed)"
    assert answer_error(299) == "HTTP 299 non-standard status"


async def test_a_refusal_names_the_kind_of_address_never_the_address_a_name_resolved_to() -> None:
    """The reason is stored and shown to the endpoint's tenant: an internal name's address
    would map the operator's network for anyone who can create an endpoint."""
    with pytest.raises(RefusedAddress) as refused:
        await resolve_checked("localhost", 80, within=5)
    assert "localhost resolves to a loopback address" in str(refused.value)
    assert "127.0.0.1" not in str(refused.value) and "::1" not in str(refused.value)
    with pytest.raises(RefusedAddress, match=r"refused: 10\.0\.0\.5 is a private address"):
        await resolve_checked("10.0.0.5", 80, within=5)
