"""The transfer's address policy on addresses and resolver answers (no network)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from airflow_runway.transfers._errors import DownloadRejectedError
from airflow_runway.transfers._network import AddressPolicy, AddressRefusedError, is_public_address

REFUSED = [
    "127.0.0.1",  # loopback
    "127.1.2.3",
    "::1",
    "10.0.0.1",  # private
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # link-local: the cloud metadata service
    "fe80::1",
    "fc00::1",  # unique-local IPv6
    "fd12:3456::1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",  # unspecified
    "::",
    "240.0.0.1",  # reserved
    "192.0.2.10",  # documentation
    "224.0.0.1",  # multicast
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped forms of the above
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
]
PUBLIC = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_by_default(address):
    ip = ipaddress.ip_address(address)
    assert not is_public_address(ip)
    assert not AddressPolicy.from_flag(False).allows(ip)
    assert AddressPolicy.from_flag(True).allows(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    ip = ipaddress.ip_address(address)
    assert is_public_address(ip)
    assert AddressPolicy.from_flag(False).allows(ip)


def test_an_allowed_network_admits_only_itself():
    policy = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    assert policy.allows(ipaddress.ip_address("127.0.0.2"))
    assert not policy.allows(ipaddress.ip_address("127.0.0.1"))
    assert not policy.allows(ipaddress.ip_address("::1"))  # another IP version is never inside it


def answers(*addresses: str):
    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]

    return resolve


def test_resolve_checked_returns_the_checked_answers():
    policy = AddressPolicy(resolve=answers("93.184.215.14", "2606:4700:4700::1111"))
    infos = policy.resolve_checked("cdn.example", 443)
    assert [info[4][0] for info in infos] == ["93.184.215.14", "2606:4700:4700::1111"]


@pytest.mark.parametrize(
    "addresses", [("169.254.169.254",), ("93.184.215.14", "10.0.0.7"), ("fc00::5",), ("::ffff:127.0.0.1",)]
)
def test_one_refused_answer_refuses_the_name(addresses):
    policy = AddressPolicy(resolve=answers(*addresses))
    with pytest.raises(AddressRefusedError, match=r"Refusing to connect to cdn\.example \(it resolves to") as raised:
        policy.resolve_checked("cdn.example", 443)
    assert isinstance(raised.value, DownloadRejectedError)  # permanent: the task fails without retries
    assert "allow_private_network" in str(raised.value)
