"""plex's view of etcd (plex.deploy.etcd): the gateway's answers and the member check."""

from __future__ import annotations

import json

import pytest

from plex.deploy import etcd

SERVERS = ["demo-server1", "demo-server2", "demo-server3"]


def members(*names: str) -> list[etcd.Member]:
    doc = {
        "members": [
            {"ID": str(i), "peerURLs": [f"http://10.0.0.{i}:2380"], **({"name": n} if n else {})}
            for i, n in enumerate(names, 1)
        ]
    }
    return etcd.parse_members(json.dumps(doc))


def test_rke2_member_names_carry_a_suffix() -> None:
    m = members("demo-server2-1a2b3c4d", "demo-server2", "demo-server20", "other")
    assert [x.node(SERVERS) for x in m] == ["demo-server2", "demo-server2", None, None]


def test_exactly_the_servers_is_ok() -> None:
    check = etcd.check_members(members(*SERVERS), set(SERVERS), SERVERS)
    assert check.ok


def test_stale_unstarted_and_missing_members() -> None:
    check = etcd.check_members(
        members("demo-server1", "demo-server3", ""), {"demo-server1", "demo-server2"}, SERVERS
    )
    assert [m.name for m in check.stale] == ["demo-server3"]
    assert [m.peer_urls for m in check.unstarted] == [("http://10.0.0.3:2380",)]
    assert check.missing == ("demo-server2",)
    assert not check.ok


def test_etcds_own_errors_come_through() -> None:
    with pytest.raises(ValueError, match="etcdserver: request timed out"):
        etcd.parse_members('{"error":"etcdserver: request timed out","code":14}')
    st = etcd.parse_status(
        json.dumps(
            {"header": {"member_id": "7"}, "leader": "0", "errors": ["etcdserver: no leader"]}
        )
    )
    assert not st.has_quorum and st.errors == ("etcdserver: no leader",)
    assert etcd.parse_status('{"header": {"member_id": "7"}, "leader": "7"}').has_quorum


def test_the_query_uses_rke2s_etcd_client_certificates() -> None:
    argv = etcd.curl(etcd.MEMBERS)
    assert argv[-1] == "https://127.0.0.1:2382/v3/cluster/member/list"
    assert "/var/lib/rancher/rke2/server/tls/etcd/server-client.crt" in argv


def test_the_youngest_etcd_decides_how_long_the_next_member_change_waits() -> None:
    # procps pads `etimes=` with spaces; a node may show two etcd processes for a moment.
    assert etcd.parse_age(0, "     12\n      3\n") == 3
    assert etcd.parse_age(1, "") is None  # ps -C exits 1 when no such process runs
    assert etcd.parse_age(0, "\n") is None
    assert etcd.settle_wait([3, 9]) == etcd.HEALTH_INTERVAL + etcd.CONNECT_MARGIN - 3
    assert etcd.settle_wait([6]) == 0.0  # connected for longer than HealthInterval already
    assert etcd.settle_wait([]) == 0.0  # no etcd seen: nothing to wait on


def test_a_learner_is_a_member_that_does_not_vote_yet() -> None:
    # The gateway's answer for a joining server RKE2 added as a learner (etcd 3.4.23).
    doc = {
        "members": [
            {"ID": "1", "name": "demo-server1-0a0b0c0d", "peerURLs": ["https://10.0.0.1:2380"]},
            {
                "ID": "2",
                "name": "demo-server2-1a2b3c4d",
                "peerURLs": ["https://10.0.0.2:2380"],
                "isLearner": True,
            },
        ]
    }
    ms = etcd.parse_members(json.dumps(doc))
    assert etcd.learner_of(ms, "demo-server2") == ms[1]
    assert etcd.learner_of(ms, "demo-server1") is None
    assert etcd.votes(ms, "demo-server1") and not etcd.votes(ms, "demo-server2")
    check = etcd.check_members(ms, {"demo-server1", "demo-server2"}, SERVERS)
    assert not check.ok and check.learners == (ms[1],) and not check.missing
