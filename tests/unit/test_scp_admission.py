"""The SCP's host allow-list and the receipt/wait decision, without a network."""

from __future__ import annotations

import threading

import pytest

from services.scp_ingest.scp import host_allowed, parse_hosts
from shared.config import ConfigurationError, load_settings
from shared.ingest import Receipt


def test_hosts_are_addresses_or_networks() -> None:
    allowed = parse_hosts(["192.0.2.7", "10.1.0.0/16", "2001:db8::/32"])
    assert host_allowed("192.0.2.7", allowed)
    assert host_allowed("10.1.200.3", allowed)
    assert host_allowed("2001:db8::5", allowed)
    assert host_allowed("::ffff:10.1.2.3", allowed)  # IPv4 peer on an IPv6 socket
    assert not host_allowed("10.2.0.1", allowed)
    assert not host_allowed("192.0.2.8", allowed)
    assert not host_allowed("::1", allowed)
    assert not host_allowed("not-an-address", allowed)
    assert host_allowed("203.0.113.9", [])  # empty: every host


def test_an_allow_list_entry_that_is_not_an_address_stops_the_program() -> None:
    with pytest.raises(ConfigurationError, match=r"SCP_ALLOWED_HOSTS.*pacs\.hospital"):
        load_settings(scp_allowed_hosts="10.0.0.1, pacs.hospital")
    assert load_settings(scp_allowed_hosts="10.0.0.1, 10.2.0.0/16").allowed_hosts == [
        "10.0.0.1", "10.2.0.0/16"]


def test_scp_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="SCP_MAX_ASSOCIATIONS"):
        load_settings(scp_max_associations=0)
    with pytest.raises(ConfigurationError, match="SCP_STORE_TIMEOUT"):
        load_settings(scp_store_timeout=0)
    with pytest.raises(ConfigurationError, match="MAX_OBJECT_BYTES"):
        load_settings(max_object_bytes=0)


def test_a_receipt_is_either_committed_or_abandoned_never_both() -> None:
    committed = Receipt()
    assert committed.commit()
    assert not committed.abandon()  # the waiter must wait for the outcome
    abandoned = Receipt()
    assert abandoned.abandon()
    assert abandoned.abandoned and not abandoned.commit()
    for _ in range(200):  # raced from two threads: exactly one side wins
        assert _race(Receipt()) in ({"commit": True, "abandon": False},
                                    {"commit": False, "abandon": True})


def _race(receipt: Receipt) -> dict[str, bool]:
    results: dict[str, bool] = {}
    sides = [threading.Thread(target=lambda: results.update(commit=receipt.commit())),
             threading.Thread(target=lambda: results.update(abandon=receipt.abandon()))]
    for side in sides:
        side.start()
    for side in sides:
        side.join()
    return results
