"""The routing rules and the account of lost replicas, on the Router itself (no connection is made)."""

from __future__ import annotations

from collections import Counter

from pytest_ubench.load.http import RequestFailed
from pytest_ubench.load.routing import Router, Target
from pytest_ubench.metrics.records import Record


def router(n: int, routing: str) -> Router:
    return Router([Target("127.0.0.1", 9 + k) for k in range(n)], routing, seed=7, connect_timeout_s=1.0)


def test_round_robin_takes_each_in_turn_and_skips_the_lost() -> None:
    r = router(3, "round-robin")
    assert [r.route() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert r.failover(1, "refused") in (0, 2)
    assert set(r.route() for _ in range(10)) == {0, 2}


def test_least_outstanding_picks_the_least_loaded_and_shares_ties() -> None:
    r = router(3, "least-outstanding")
    r.outstanding[:] = [2, 0, 1]
    assert [r.route() for _ in range(4)] == [1, 1, 1, 1]
    r.outstanding[:] = [1, 1, 1]
    assert sorted(r.route() for _ in range(3)) == [0, 1, 2]  # a tie is not always the first


def test_random_is_seeded_even_and_never_a_lost_one() -> None:
    one, other = router(3, "random"), router(3, "random")
    draws = [one.route() for _ in range(3000)]
    assert draws == [other.route() for _ in range(3000)]  # the same seed, the same draws
    picks = Counter(draws)
    assert all(900 <= picks[k] <= 1100 for k in range(3)), picks
    r = router(3, "random")
    r.failover(0, "refused")
    assert 0 not in {r.route() for _ in range(300)}


def test_requests_broken_on_a_replica_that_dies_become_replica_lost_and_only_those() -> None:
    r = router(2, "round-robin")
    before, in_flight = Record(0.0), Record(0.0)
    before.error = "disconnected"
    assert r.broken(1, before, RequestFailed("disconnected")).kind == "disconnected"
    r.served(1)  # a success after it: that break was not the replica's death
    in_flight.error = "disconnected"
    r.broken(1, in_flight, RequestFailed("disconnected"))
    timeout = RequestFailed("timeout")
    assert r.broken(1, Record(0.0), timeout) is timeout  # not a broken connection: never reclassified
    assert r.failover(1, "connection refused") == 0  # the next try goes to the survivor
    assert 1 in r.lost and (before.error, in_flight.error) == ("disconnected", "replica_lost")
    assert r.broken(1, Record(0.0), RequestFailed("disconnected")).kind == "replica_lost"
    assert r.failover(0, "connection refused") == -1  # none left: the request fails as it did


def test_one_target_is_never_lost() -> None:
    r = router(1, "least-outstanding")
    rec = Record(0.0)
    assert r.failover(0, "refused") == -1 and r.lost == {}
    assert r.broken(0, rec, RequestFailed("disconnected")).kind == "disconnected"
