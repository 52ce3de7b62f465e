"""Benchmark: pose-cluster K-means at LaST size with the paper's settings (docs/method.md §3.4).

Clusters ``--n`` (default 100,000) structured 26-d R_LA vectors (a mixture of 15 Gaussians over line
lengths and angles) with K=15, k-means++, n_init=10, max_iter=1000, Lloyd; also times the vectorised
``pose_vectors`` against a per-image loop of ``pose_vector`` measured in the same run. Writes
``benchmarks/results/pose_cluster.json``.

    python benchmarks/pose_cluster.py            # full size, target < 60 s on 2 cores
    python benchmarks/pose_cluster.py --quick    # 10,000 vectors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import Timer, add_common_args, env_info, write_json
from rlq.attributes.pose import BODY_LINES, cluster_poses, pose_vector, pose_vectors


def structured_vectors(n: int, k: int, seed: int) -> np.ndarray:
    """n R_LA-like vectors: 13 lengths (frame px) and 13 angles (degrees, wrapped to (-180, 180])."""
    rng = np.random.default_rng(seed)
    nl = len(BODY_LINES)
    centres = np.concatenate([rng.uniform(5, 90, (k, nl)), rng.uniform(-180, 180, (k, nl))], axis=1)
    weights = rng.dirichlet(np.full(k, 2.0))
    comp = rng.choice(k, size=n, p=weights)
    # Wide noise: overlapping clusters that need tens of Lloyd iterations, like real pose vectors.
    noise = np.concatenate([rng.normal(0, 15, (n, nl)), rng.normal(0, 45, (n, nl))], axis=1)
    x = centres[comp] + noise
    x[:, :nl] = np.abs(x[:, :nl])
    x[:, nl:] = 180.0 - np.mod(180.0 - x[:, nl:], 360.0)  # wrap into (-180, 180]
    return x


def random_keypoints(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = np.stack([rng.integers(40, 200, n), rng.integers(80, 500, n)], axis=1)
    kp = rng.uniform(0, 1, (n, 17, 3))
    kp[..., :2] *= sizes[:, None, :]
    return kp, sizes


def thread_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    return [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads")} for d in threadpool_info()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, default_out="benchmarks/results/pose_cluster.json")
    ap.add_argument("--n", type=int, default=None, help="number of vectors (default 100,000; 10,000 with --quick)")
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="limit OpenMP/BLAS threads (threadpoolctl)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.n or (10_000 if args.quick else 100_000)

    import sklearn

    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads)

    # Pose vectors: vectorised vs a per-image loop (baseline, on a subset, measured in this run).
    kp, sizes = random_keypoints(n, args.seed)
    with Timer() as tv:
        vecs = pose_vectors(kp, sizes, "R_LA")
    t_vec = tv.seconds
    m = min(n, 5_000)
    with Timer() as tl:
        loop = np.stack([pose_vector(kp[i], (int(sizes[i, 0]), int(sizes[i, 1]))) for i in range(m)])
    t_loop = tl.seconds * n / m
    assert np.array_equal(loop, vecs[:m])

    X = structured_vectors(n, args.k, args.seed)
    with Timer() as tf:
        labels, model = cluster_poses(X, k=args.k, seed=args.seed, n_init=args.n_init, max_iter=args.max_iter)
    t_fit = tf.seconds
    threads = thread_info()
    if limiter is not None:
        limiter.unregister()

    result = {
        "benchmark": "pose_cluster",
        "n": n,
        "dim": int(X.shape[1]),
        "k": args.k,
        "n_init": args.n_init,
        "max_iter": args.max_iter,
        "algorithm": "lloyd",
        "kmeans_time_s": round(t_fit, 3),
        "kmeans_cpu_s": round(tf.cpu, 3),
        "kmeans_time_per_init_s": round(t_fit / args.n_init, 3),
        "kmeans_n_iter_best": int(model.n_iter_),
        "cluster_sizes_min_max": [int(np.bincount(labels)[1:].min()), int(np.bincount(labels)[1:].max())],
        "pose_vectors_time_s": round(t_vec, 4),
        "pose_vector_loop_time_s_extrapolated": round(t_loop, 3),
        "vectorised_speedup": round(t_loop / max(t_vec, 1e-9), 1),
        "quick": bool(args.quick),
        "sklearn": sklearn.__version__,
        "thread_limit": args.threads,
        "threadpools": threads,
        "env": env_info(),
    }
    write_json(args.out, result, quick=args.quick)
    print(f"K-means n={n} K={args.k} n_init={args.n_init} max_iter={args.max_iter}: {t_fit:.2f} s "
          f"({t_fit / args.n_init:.2f} s per init, best init {model.n_iter_} iterations)")
    print(f"pose_vectors: {t_vec * 1e3:.1f} ms vectorised vs {t_loop:.2f} s looped "
          f"(x{result['vectorised_speedup']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
