"""The address decision function alone: nothing here opens a connection."""

import pytest

from curation.download.address_policy import (
    AddressPolicy,
    embedded_ipv4,
    parse_networks,
    refusal_category,
)

PUBLIC_POLICY = AddressPolicy()


@pytest.mark.parametrize(
    "address, category",
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00:ec2::254", "private"),  # an IPv6 cloud metadata address (unique local)
        ("169.254.169.254", "link_local"),  # the well-known cloud metadata address
        ("fe80::1", "link_local"),
        ("127.0.0.1", "loopback"),
        ("127.3.4.5", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.100.100.200", "not_global"),  # shared address space (a cloud metadata address too)
        ("192.0.2.10", "private"),  # documentation range
    ],
)
def test_non_public_addresses_are_refused(address, category):
    assert PUBLIC_POLICY.refusal(address) == category
    assert not PUBLIC_POLICY.allows(address)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
    ],
)
def test_ipv4_hidden_in_ipv6_is_judged_by_the_ipv4_address(address):
    assert embedded_ipv4(__import__("ipaddress").ip_address(address)) is not None
    assert PUBLIC_POLICY.refusal(address) is not None


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address):
    assert PUBLIC_POLICY.refusal(address) is None


def test_allow_list_opens_only_its_own_network():
    policy = AddressPolicy.from_cidrs(["127.0.0.1/32", "fd12:3456::/32"])
    assert policy.allows("127.0.0.1")
    assert policy.allows("::ffff:127.0.0.1")
    assert policy.allows("fd12:3456::9")
    assert policy.refusal("127.0.0.2") == "loopback"
    assert policy.refusal("169.254.169.254") == "link_local"
    assert policy.refusal("::1") == "loopback"


def test_refusal_category_of_a_public_address_is_none():
    import ipaddress

    assert refusal_category(ipaddress.ip_address("93.184.216.34")) is None


def test_malformed_cidr_is_a_configuration_error():
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks(["not-a-network"])
