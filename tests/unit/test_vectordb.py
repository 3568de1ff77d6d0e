"""The vector workload's ground truth: exact top-k, recall, seeded data and .npy inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_ubench.metrics import slo
from pytest_ubench.orchestrators.base import ServiceError
from pytest_ubench.protocols.vector import VectorSearch, exact_top_k, query_plan, recall, vectors


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_exact_top_k_matches_a_plain_sort(metric):
    rng = np.random.default_rng(3)
    base, queries = rng.normal(size=(500, 12)).astype(np.float32), rng.normal(size=(40, 12)).astype(np.float32)
    got = exact_top_k(base, queries, 7, metric)
    for q, ids in zip(queries.astype(np.float64), got, strict=True):
        b = base.astype(np.float64)
        if metric == "l2":
            score = np.linalg.norm(b - q, axis=1)
        elif metric == "cosine":
            score = -(b @ q) / (np.linalg.norm(b, axis=1) * np.linalg.norm(q))
        else:
            score = -(b @ q)
        assert ids.tolist() == np.argsort(score)[:7].tolist()


def test_filtered_truth_stays_inside_its_group_and_may_be_short():
    spec = VectorSearch("chroma", "http://x", dim=4, count=23, queries=50, groups=5, filtered_share=1.0, top_k=10)
    groups = vectors(spec)[2]
    group_of, truth = query_plan(spec)
    for g, ids in zip(group_of, truth, strict=True):
        assert g >= 0 and set(groups[ids].tolist()) == {g}
        assert len(ids) == min(10, int((groups == g).sum()))  # 23 vectors in 5 groups: 4 or 5 each


def test_recall_counts_the_exact_answers_found():
    assert recall([1, 2, 3, 99], np.array([1, 2, 3, 4])) == 0.75
    assert recall([], np.array([], dtype=int)) == 1.0


def test_synthetic_data_is_seeded_and_npy_files_are_checked(tmp_path):
    a = VectorSearch("milvus", "http://x", dim=6, count=100, queries=10, seed=1)
    assert np.array_equal(vectors(a)[0], vectors(VectorSearch("milvus", "http://y", dim=6, count=100, queries=10,
                                                              seed=1))[0])  # fmt: skip
    assert not np.array_equal(vectors(a)[0], vectors(VectorSearch("milvus", "http://x", dim=6, count=100, seed=2))[0])
    good = tmp_path / "base.npy"
    np.save(good, np.arange(60, dtype=np.float64).reshape(20, 3))
    base, queries, _ = vectors(VectorSearch("milvus", "http://x", count=10, queries=4, data=str(good)))
    assert base.shape == (10, 3) and base.dtype == np.float32 and queries.shape == (4, 3)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.arange(5.0))
    with pytest.raises(ServiceError, match=r"workload\.vector\.data: .*flat\.npy holds \(5,\)"):
        vectors(VectorSearch("milvus", "http://x", data=str(flat)))
    with pytest.raises(ServiceError, match=r"workload\.vector\.query_data: .*has dimension 3, the data has 6"):
        vectors(VectorSearch("milvus", "http://x", dim=6, count=10, query_data=str(good)))
    with pytest.raises(ServiceError, match=r"workload\.vector\.data: cannot read"):
        vectors(VectorSearch("milvus", "http://x", data=str(tmp_path / "absent.npy")))


def test_recall_and_phase_slos_parse_and_judge():
    s = slo.parse("recall.mean >= 0.95")
    assert slo.judge([s], {"recall": {"mean": 0.97}})[0].passed
    assert slo.judge([s], {"requests": {}})[0].measured is None  # no recall (not a vector run): fails, no crash
    p = slo.parse("phases.insert.vectors_per_s > 1000")
    assert not slo.judge([p], {"phases": {"insert": {"vectors_per_s": 900.0}}})[0].passed
    assert slo.parse("ops.filtered_query.recall >= 0.9").path == "ops.filtered_query.recall"
    with pytest.raises(slo.SLOSyntaxError):
        slo.parse("phases.insert.speed > 1")


def test_filtered_exact_answers_match_a_plain_masked_sort():
    rng = np.random.default_rng(5)
    base, queries = rng.normal(size=(400, 6)).astype(np.float32), rng.normal(size=(30, 6)).astype(np.float32)
    groups, group_of = np.arange(400) % 7, rng.integers(-1, 7, 30)
    got = exact_top_k(base, queries, 5, "l2", groups, group_of)
    for q, g, ids in zip(queries.astype(np.float64), group_of, got, strict=True):
        d = np.linalg.norm(base.astype(np.float64) - q, axis=1)
        if g >= 0:
            d[groups != g] = np.inf
        assert ids.tolist() == np.argsort(d)[:5].tolist()


def test_exact_answers_are_computed_once_per_host_and_read_back(monkeypatch):
    from pytest_ubench.protocols import vector as vdb

    spec = VectorSearch("chroma", "http://x", dim=5, count=300, queries=12, filtered_share=0.5, seed=98765)
    vdb._truth_cache(spec).unlink(missing_ok=True)
    first = query_plan(spec)
    monkeypatch.setattr(vdb, "exact_top_k", lambda *a, **k: pytest.fail("computed again instead of read back"))
    again = query_plan(spec)
    assert np.array_equal(first[0], again[0]) and all(
        np.array_equal(a, b) for a, b in zip(first[1], again[1], strict=True)
    )
    other = VectorSearch("chroma", "http://x", dim=5, count=300, queries=12, filtered_share=0.5, seed=98766)
    assert vdb._truth_cache(other) != vdb._truth_cache(spec)  # other data, another file
