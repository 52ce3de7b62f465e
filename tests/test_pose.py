"""Pose vectors, clustering, sweep, CSV round trip and contact sheets (docs/method.md §3.4)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from rlq.attributes import pose as P
from rlq.attributes.sheets import cluster_contact_sheet
from rlq.data.sidecars import POSE_COLUMNS, Detection, read_pose_clusters
from rlq.errors import ConfigError, SideInputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# docs/method.md §3.4 table, written out independently of the module.
SPEC_LINES = [(0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
              (11, 13), (12, 14), (13, 15), (14, 16)]


def ref_vector(kp, w, h, kind):
    """Slow reference: explicit loops with int() truncation, math.atan2 and math.hypot."""
    xs, ys = [], []
    for x, y in ((float(p[0]), float(p[1])) for p in kp):
        xs.append(int(int(x) * (192 / w)))  # the authors' resize_coordinates: ratio formed first
        ys.append(int(int(y) * (384 / h)))
    lengths, angles = [], []
    for s, e in SPEC_LINES:
        dx, dy = xs[s] - xs[e], ys[s] - ys[e]
        lengths.append(math.hypot(dx, dy))
        angles.append(math.degrees(math.atan2(dy, dx)))
    if kind == "R_A":
        return angles
    if kind == "R_LA":
        return lengths + angles
    coords = [v for x, y in zip(xs, ys) for v in (x, y)]
    return coords + lengths + angles


def one_point_kp(points):
    """17 keypoints all at (50, 50) except the given {index: (x, y)}."""
    kp = np.full((17, 2), 50.0)
    for i, xy in points.items():
        kp[i] = xy
    return kp


def test_frame_mapping_forms_the_ratio_first_like_the_authors():
    """docs/method.md §3.4: x' = int(x_int * (192 / W)). Brute force over integer coordinates and sizes: the
    mapping equals the ratio-first float64 formula everywhere, and cases where the product-first order
    (x_int * 192 / W) gives another pixel exist and are mapped the authors' way."""
    differing = []
    for w in range(1, 100):
        for x in range(0, w + 1):
            kp = np.zeros((17, 2))
            kp[0] = (x + 0.7, x + 0.7)  # truncated toward zero first
            got = P.pose_vector(kp, (w, w), "R_LAC")[:2]
            ratio_first = (int(x * (192 / w)), int(x * (384 / w)))
            assert tuple(got) == ratio_first, (x, w)
            if int(x * 192 / w) != ratio_first[0]:
                differing.append((x, w))
    assert (47, 47) in differing  # 47 * (192/47) = 191.99999... -> 191; 47 * 192 / 47 = 192
    kp = np.zeros((17, 2))
    kp[0] = (47, 47)
    assert P.pose_vector(kp, (47, 47), "R_LAC")[0] == 191.0


def test_body_lines_match_spec():
    assert P.BODY_LINES == tuple(SPEC_LINES)


@pytest.mark.parametrize("kind", ["R_LA", "R_A", "R_LAC"])
def test_pose_vector_matches_reference_on_random_keypoints(kind):
    rng = np.random.default_rng(1)
    for _ in range(50):
        w, h = int(rng.integers(20, 400)), int(rng.integers(40, 800))
        kp = np.stack([rng.uniform(-0.2 * w, 1.2 * w, 17), rng.uniform(-0.2 * h, 1.2 * h, 17),
                       rng.uniform(0, 1, 17)], axis=1)
        got = P.pose_vector(kp, (w, h), kind)
        np.testing.assert_allclose(got, ref_vector(kp, w, h, kind), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind,dim", [("R_LA", 26), ("R_A", 13), ("R_LAC", 60)])
def test_vector_sizes(kind, dim):
    assert P.pose_vector(np.zeros((17, 3)), (192, 384), kind).shape == (dim,)
    assert P.pose_dim(kind) == dim
    assert P.pose_vectors(np.zeros((4, 17, 2)), np.full((4, 2), 100), kind).shape == (4, dim)


def test_unknown_kind_rejected():
    with pytest.raises(ConfigError, match="N_LA"):
        P.pose_vector(np.zeros((17, 2)), (10, 10), "N_LA")


def test_hand_computed_lines_in_frame_size_image():
    # In a 192x384 image the mapping is the identity on integers. Line 6 is (5, 7): start 5, end 7.
    kp = one_point_kp({5: (100, 100), 7: (100, 160)})  # start above end: dy = -60 -> -90 degrees
    v = P.pose_vector(kp, (192, 384))
    assert v[5] == 60.0 and v[13 + 5] == -90.0
    kp = one_point_kp({5: (100, 160), 7: (100, 100)})  # start below end: +90
    assert P.pose_vector(kp, (192, 384))[13 + 5] == 90.0
    # Line 5 is (5, 6): horizontal; start right of end -> 0, start left of end -> 180 (never -180).
    kp = one_point_kp({5: (120, 80), 6: (90, 80)})
    v = P.pose_vector(kp, (192, 384))
    assert v[4] == 30.0 and v[13 + 4] == 0.0
    kp = one_point_kp({5: (90, 80), 6: (120, 80)})
    assert P.pose_vector(kp, (192, 384))[13 + 4] == 180.0
    kp = one_point_kp({5: (90, -0.5), 6: (120, 0.3)})  # y truncates to -0.0 and 0.0: still 180, not -180
    assert P.pose_vector(kp, (192, 384))[13 + 4] == 180.0
    # 3-4-5 triangle on line 1 (0, 1).
    kp = one_point_kp({0: (13, 14), 1: (10, 10)})
    v = P.pose_vector(kp, (192, 384))
    assert v[0] == 5.0 and v[13] == pytest.approx(math.degrees(math.atan2(4, 3)))
    # Coincident points: length 0, angle 0.
    assert P.pose_vector(np.full((17, 2), 7.0), (192, 384))[13:].tolist() == [0.0] * 13


def test_truncation_toward_zero():
    kp = one_point_kp({0: (191.9, 383.99), 1: (-0.9, -5.7)})
    v = P.pose_vector(kp, (192, 384), "R_LAC")
    assert v[0:2].tolist() == [191.0, 383.0]  # 191.9 -> 191, 383.99 -> 383
    assert v[2:4].tolist() == [0.0, -5.0]  # -0.9 -> 0 (toward zero), -5.7 -> -5
    # Negative coordinates after scaling also truncate toward zero: x=-3 in a 1000-wide image -> -0.576 -> 0.
    v = P.pose_vector(one_point_kp({0: (-3.5, -3.0)}), (1000, 100), "R_LAC")
    assert v[0] == 0.0 and not math.copysign(1.0, v[0]) < 0  # no negative zero
    assert v[1] == int(-3 * 384 / 100) == -11


def test_image_size_scaling():
    # A 96x192 image doubles every coordinate; integer truncation happens before scaling.
    kp = one_point_kp({0: (10.7, 20.2), 1: (40.0, 20.0)})
    v = P.pose_vector(kp, (96, 192), "R_LAC")
    assert v[0:4].tolist() == [20.0, 40.0, 80.0, 40.0]
    assert v[34] == 60.0  # line (0, 1) length in the frame
    # Same relative pose at two resolutions gives the same vector.
    kp_small = one_point_kp({5: (10, 10), 7: (30, 50)})
    kp_big = kp_small * 4
    np.testing.assert_array_equal(P.pose_vector(kp_small, (48, 96)), P.pose_vector(kp_big, (192, 384)))
    # Non-uniform scaling: width 384 halves x only.
    v = P.pose_vector(one_point_kp({0: (100, 100), 1: (0, 100)}), (384, 384), "R_LAC")
    assert v[0:2].tolist() == [50.0, 100.0]


def test_batched_equals_single():
    rng = np.random.default_rng(2)
    kp = rng.uniform(0, 300, (7, 17, 3))
    sizes = rng.integers(50, 400, (7, 2))
    batch = P.pose_vectors(kp, sizes, "R_LAC")
    for i in range(7):
        np.testing.assert_array_equal(batch[i], P.pose_vector(kp[i], tuple(sizes[i]), "R_LAC"))


def test_bad_inputs():
    with pytest.raises(ValueError):
        P.pose_vector(np.zeros((16, 2)), (10, 10))
    with pytest.raises(ValueError):
        P.pose_vector(np.zeros((17, 2)), (0, 10))
    with pytest.raises(ValueError):
        P.pose_vector(np.full((17, 2), np.nan), (10, 10))


# --------------------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------------------


def blobs(n_per=30, k=4, d=26, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-100, 100, (k, d))
    return np.concatenate([c + rng.normal(0, 1, (n_per, d)) for c in centers]), np.repeat(np.arange(k), n_per)


def test_cluster_poses_settings_determinism_and_range():
    X, truth = blobs()
    labels, model = P.cluster_poses(X, k=4)
    params = model.get_params()
    assert params["n_init"] == 10 and params["max_iter"] == 1000 and params["algorithm"] == "lloyd"
    assert params["init"] == "k-means++" and params["random_state"] == 0 and params["n_clusters"] == 4
    assert labels.min() == 1 and labels.max() == 4 and labels.dtype == np.int64
    labels2, _ = P.cluster_poses(X, k=4)
    np.testing.assert_array_equal(labels, labels2)
    # Well-separated blobs are recovered exactly (up to label permutation).
    assert len({(a, b) for a, b in zip(truth, labels)}) == 4
    np.testing.assert_array_equal(P.assign_clusters(model, X), labels)
    with pytest.raises(ValueError):
        P.cluster_poses(X[:3], k=4)


def _detections(n=40, seed=0):
    rng = np.random.default_rng(seed)
    keys = [f"{i:03d}_1_c1_{i:06d}" for i in range(n)]
    dets, sizes = {}, {}
    for i, k in enumerate(keys):
        sizes[k] = (int(rng.integers(40, 120)), int(rng.integers(100, 300)))
        if i % 7 == 3:
            dets[k] = None  # no detection
        else:
            kp = np.concatenate([rng.uniform(0, 1, (17, 2)) * sizes[k], rng.uniform(0, 1, (17, 1))], axis=1)
            dets[k] = Detection(kp, score=float(rng.uniform(0.2, 3.0)))
    return keys, dets, sizes


def test_pose_cluster_table_nulls_and_columns():
    keys, dets, sizes = _detections()
    cols = P.pose_cluster_table(dets, sizes, keys, ks=(5, 10), kinds=("R_LA", "R_A"))
    assert set(cols) == {"R_LA_5", "R_LA_10", "R_A_5", "R_A_10"}
    null = np.array([dets[k] is None for k in keys])
    for name, col in cols.items():
        k = int(name.rsplit("_", 1)[1])
        assert col.shape == (len(keys),)
        assert (col[null] == 0).all() and (col[~null] >= 1).all() and col.max() <= k
    # The column equals clustering the non-null vectors directly.
    vecs = P.pose_vectors(np.stack([dets[k].keypoints for k in keys if dets[k] is not None]),
                          np.array([sizes[k] for k in keys if dets[k] is not None]), "R_LA")
    np.testing.assert_array_equal(cols["R_LA_5"][~null], P.cluster_poses(vecs, k=5)[0])
    # A score threshold turns low-score detections into null poses.
    thr = P.pose_cluster_table(dets, sizes, keys, ks=(5,), score_threshold=1.0)["R_LA_5"]
    low = np.array([dets[k] is not None and dets[k].score < 1.0 for k in keys])
    assert low.any() and (thr[low | null] == 0).all() and (thr[~(low | null)] >= 1).all()


def test_pose_cluster_table_errors():
    keys, dets, sizes = _detections(n=10)
    with pytest.raises(SideInputError, match="lack"):
        P.pose_cluster_table({k: dets[k] for k in keys[1:]}, sizes, keys, ks=(2,))
    with pytest.raises(SideInputError, match="fewer than K=15"):
        P.pose_cluster_table(dets, sizes, keys, ks=(15,))


def test_authors_row_order():
    assert P.authors_row_order([0, 3, 0, 1, 2]).tolist() == [1, 3, 4, 0, 2]


def test_authors_csv_fixture_reads_r_la_15(tmp_path):
    # A fixture in the authors' layout: Category,Image + 48 float-valued columns, detected rows first.
    rng = np.random.default_rng(5)
    keys = ["000_1_c10_001003", "000_1_c10_001007", "001_2_c3_000123", "130_4_c6_012363"]
    values = rng.integers(1, 41, (4, 48)).astype(float)
    values[-1] = 0.0  # an undetected image: all zeros
    path = tmp_path / "LTCC_Pose_Cluster.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["Category", "Image", *POSE_COLUMNS])
        for key, row in zip(keys, values):
            w.writerow(["train", key, *[f"{v:.1f}" for v in row]])
    assert path.read_text().splitlines()[1].split(",")[2].endswith(".0")
    j = POSE_COLUMNS.index("R_LA_15")
    assert read_pose_clusters(path) == {k: int(values[i, j]) for i, k in enumerate(keys)}


def test_written_table_reads_back(tmp_path):
    keys, dets, sizes = _detections()
    cols = P.pose_cluster_table(dets, sizes, keys, ks=(15, 5), kinds=("R_A", "R_LA"))
    path = tmp_path / "Pose_Cluster.csv"
    P.write_pose_cluster_table(path, keys, cols)
    for name, col in cols.items():
        assert read_pose_clusters(path, name) == dict(zip(keys, col.tolist()))
    lines = path.read_text().splitlines()
    # Authors' column order (K ascending, then kind order R_LA, R_LAC, R_A) and row order (nulls last).
    assert lines[0] == "Category,Image,R_LA_5,R_A_5,R_LA_15,R_A_15"
    first_null = next(i for i, ln in enumerate(lines[1:]) if ln.split(",")[2] == "0.0")
    assert all(ln.split(",")[2] == "0.0" for ln in lines[1 + first_null:])
    assert len(lines) == len(keys) + 1 and lines[1].startswith("train,")


# --------------------------------------------------------------------------------------------------
# Sweep, plot, contact sheet
# --------------------------------------------------------------------------------------------------


def test_sweep_and_plot(tmp_path):
    X, _ = blobs(n_per=25, k=4, d=5, seed=3)
    res = P.sweep_k(X, ks=(2, 4, 6), sample_size=60, n_init=2)
    assert [r["k"] for r in res] == [2, 4, 6]
    for r in res:
        for f in ("inertia", "silhouette", "calinski_harabasz", "davies_bouldin"):
            assert np.isfinite(r[f])
        assert r["silhouette_sample"] == 60
    assert res[0]["inertia"] > res[1]["inertia"] > res[2]["inertia"]
    # The true K of well-separated blobs has the best silhouette.
    assert max(res, key=lambda r: r["silhouette"])["k"] == 4
    out = P.plot_sweep(res, tmp_path / "sweep.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as im:
        assert im.size[0] > 100


def test_contact_sheet(tmp_path):
    paths = {}
    for c in range(3):
        paths[c] = []
        for i in range(c * 3 + 1):
            p = tmp_path / f"img_{c}_{i}.png"
            Image.new("RGB", (40, 80), (40 * c, 0, 0)).save(p)
            paths[c].append(str(p))
    kps = {paths[1][0]: np.column_stack([np.linspace(0, 39, 17), np.linspace(0, 79, 17)])}
    out = cluster_contact_sheet(paths, tmp_path / "sheet.png", per_cluster=4, thumb=(20, 40), keypoints=kps)
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as im:
        assert im.size == (76 + 4 * 24 + 4, 3 * 44 + 4)
        first = im.copy()
    out2 = cluster_contact_sheet(paths, tmp_path / "sheet2.png", per_cluster=4, thumb=(20, 40), keypoints=kps)
    with Image.open(out2) as im:
        assert np.array_equal(np.asarray(im), np.asarray(first))  # seeded: same sheet twice
    # The skeleton is drawn over exactly one thumbnail of the cluster-1 row, and nowhere else.
    plain = cluster_contact_sheet(paths, tmp_path / "plain.png", per_cluster=4, thumb=(20, 40))
    with Image.open(plain) as im:
        diff = (np.asarray(first) != np.asarray(im)).any(axis=2)
    rows = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    assert diff.sum() > 10
    assert rows.min() >= 4 + 44 and rows.max() < 4 + 44 + 40  # cluster 1's row
    assert cols.min() >= 76 and (cols.max() - cols.min()) < 20  # one thumbnail wide
