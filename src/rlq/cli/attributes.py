"""CAP side-input commands: `rlq poses cluster|sweep|sheet`, `rlq gender sheet`, and `rlq lq preview`."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import gender_app, kmeans_seed_option, lq_app, lq_seed_option, out, poses_app, sample_seed_option

_DATASET_HELP = "Dataset name (ltcc, prcc, last, deepchange, celebreid, synthcc, manifest, ...)."


def _words(values: list[str]) -> list[str]:
    """Repeated options and comma lists alike: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [w.strip() for v in values for w in v.split(",") if w.strip()]


def _int_list(values: list[str], what: str) -> list[int]:
    try:
        return [int(w) for w in _words(values)]
    except ValueError:
        raise typer.BadParameter(f"{what} takes integers (repeat the option or give a comma list), got {values}") from None


def _train(name: str, root: Path, split: str):
    from ..data.datasets import load_dataset

    ds = load_dataset(name, root)
    return ds, ds.split(split)


@poses_app.command("cluster")
def poses_cluster(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name (ltcc, prcc, last, deepchange, celebreid, synthcc, ...)."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root."),
    keypoints: Path = typer.Option(..., "--keypoints", "-k", help="AlphaPose results: a tree mirroring the dataset "
                                   "(<dir>/<leaf folder>/alphapose-results.json), one JSON, or COCO keypoint annotations."),
    out_csv: Path = typer.Option(Path("pose_clusters.csv"), "--out", "-o", help="CSV in the authors' layout."),
    k: list[str] = typer.Option(["15"], "--k", help="K; repeat (--k 5 --k 15) or give a comma list (5,10,...,40: "
                                "every column the authors ship)."),
    kind: list[str] = typer.Option(["R_LA"], "--kind", help="Vector kind: R_LA (paper), R_A or R_LAC; repeat or comma list."),
    kinds_old: str | None = typer.Option(None, "--kinds", hidden=True, help="Old spelling of --kind."),
    split: str = typer.Option("train", help="Split to cluster (fit on train only for training labels, docs/method.md §3.4)."),
    seed: int = kmeans_seed_option(),
    score_threshold: float | None = typer.Option(None, help="Treat detections below this score as no pose (default: none, as the spec)."),
) -> None:
    """Pose clusters from keypoints: 13 body lines -> R_LA vectors -> K-means (K=15, n_init=10) -> labels 1..K, 0 = no pose."""
    from ..attributes.pose_io import cluster_dataset_poses

    ds, samples = _train(dataset, root, split)
    kinds = _words([kinds_old] if kinds_old else kind)
    hist = cluster_dataset_poses(root, samples, keypoints, out_csv, ks=_int_list(k, "--k"),
                                 kinds=kinds, seed=seed, score_threshold=score_threshold, category=split)
    out.print("images per label (label 0 = no pose detected):")
    for col, h in hist.items():
        out.print(f"{col}: " + ", ".join(f"{lab}: {n}" for lab, n in sorted(h.items())))
    out.print(f"wrote {out_csv} ({len(samples)} images; train with data.pose_csv={out_csv})")


@poses_app.command("sweep")
def poses_sweep(
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root."),
    keypoints: Path = typer.Option(..., "--keypoints", "-k", help="AlphaPose tree / JSON, or COCO keypoints."),
    out_dir: Path = typer.Option(Path("pose_sweep"), "--out", "-o", help="Output folder (sweep.json, sweep.png)."),
    k: list[str] = typer.Option(["5,10,15,20,25,30,35,40"], "--k", help="K values to try; repeat or comma list "
                                "(the paper sweeps 5..40)."),
    ks_old: str | None = typer.Option(None, "--ks", hidden=True, help="Old spelling of --k."),
    kind: str = typer.Option("R_LA", "--kind", help="Vector kind: R_LA (paper), R_A or R_LAC."),
    seed: int = kmeans_seed_option(),
) -> None:
    """Cluster quality (silhouette, Calinski-Harabasz, inertia) for K in 5..40, as JSON and a plot."""
    from ..attributes.pose import detection_vectors, plot_sweep, sweep_k
    from ..attributes.pose_io import image_sizes, sample_detections
    from ..io import atomic_write_json

    ds, samples = _train(dataset, root, "train")
    dets = sample_detections(root, samples, keypoints)
    vecs, _ = detection_vectors(dets, image_sizes(samples), [s.key for s in samples], kind=kind)
    res = sweep_k(vecs, ks=_int_list([ks_old] if ks_old else k, "--k"), seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "sweep.json", res)
    plot_sweep(res, out_dir / "sweep.png")
    for r in res:
        out.print(f"K={r['k']:>2}: silhouette {r['silhouette']:.3f}  CH {r['calinski_harabasz']:.0f}  inertia {r['inertia']:.3g}")
    out.print(f"wrote {out_dir / 'sweep.json'} and {out_dir / 'sweep.png'}")


@poses_app.command("sheet")
def poses_sheet(
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root."),
    clusters: Path = typer.Option(..., "--clusters", help="Pose-cluster CSV (ours or the authors')."),
    column: str = typer.Option("R_LA_15", help="Label column."),
    out_png: Path = typer.Option(Path("pose_clusters.png"), "--out", "-o", help="Output PNG."),
    per_cluster: int = typer.Option(8, help="Images per cluster row."),
    keypoints: Path | None = typer.Option(None, "--keypoints", "-k", help="Draw the skeleton from these keypoints (AlphaPose tree / JSON)."),
    split: str = typer.Option("train", help="Split whose images to show."),
    seed: int = sample_seed_option(),
) -> None:
    """A contact sheet of images per pose cluster (paper Figures 16-18), one row per cluster."""
    from ..attributes.pose_io import sample_detections
    from ..attributes.sheets import cluster_contact_sheet
    from ..data.sidecars import read_pose_clusters

    ds, samples = _train(dataset, root, split)
    labels = read_pose_clusters(clusters, column=column)
    by_cluster: dict[int, list[str]] = {}
    for s in samples:
        if s.key in labels:
            by_cluster.setdefault(labels[s.key], []).append(s.path)
    kp = None
    if keypoints is not None:
        dets = sample_detections(root, samples, keypoints)
        kp = {s.path: dets[s.key].keypoints for s in samples if dets.get(s.key) is not None}
    cluster_contact_sheet(by_cluster, out_png, per_cluster=per_cluster, seed=seed, keypoints=kp)
    out.print(f"wrote {out_png} ({len(by_cluster)} clusters)")


@gender_app.command("sheet")
def gender_sheet_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root."),
    out_dir: Path = typer.Option(Path("gender_sheet"), "--out", "-o", help="Output folder (HTML pages + CSV template)."),
    split: str = typer.Option("train", help="Split whose identities to label."),
    per_id: int = typer.Option(6, help="Thumbnails per identity."),
    ids_per_page: int = typer.Option(20, help="Identities per HTML page."),
    existing: Path | None = typer.Option(None, help="Prefill from an existing gender CSV."),
) -> None:
    """HTML pages of identities to label by hand, plus a CSV template `Category,ID,Gender` to fill in."""
    from ..attributes.gender import gender_sheet
    from ..data.sidecars import read_gender_csv

    _, samples = _train(dataset, root, split)
    table = read_gender_csv(existing) if existing else None
    index = gender_sheet(samples, out_dir, per_id=per_id, ids_per_page=ids_per_page, existing=table, category=split)
    out.print(f"open {index}; fill in {out_dir / 'gender_template.csv'} and train with data.gender_csv=...")


@lq_app.command("preview")
def lq_preview(
    images: Path = typer.Option(..., "--images", "-i", help="A folder of person images (searched recursively)."),
    out_png: Path = typer.Option(Path("lq_preview.png"), "--out", "-o", help="Output PNG."),
    n: int = typer.Option(4, help="How many images (rows)."),
    levels: str = typer.Option("1,2,3,4", help="Severity levels to show."),
    seed: int = sample_seed_option(),
    lq_seed: int = lq_seed_option(),
) -> None:
    """Each artifact (pixelation, out-of-focus, motion blur, JPEG) at several severities (paper Figure 14)."""
    import random

    from ..data.images import image_files, read_image
    from ..lq.preview import lq_preview_sheet

    paths = image_files(images)
    if not paths:
        raise typer.BadParameter(f"no images under {images}")
    pick = random.Random(seed).sample(paths, min(n, len(paths)))
    lq_preview_sheet([read_image(p) for p in pick], out_png, levels=[int(x) for x in levels.split(",")], seed=lq_seed)
    out.print(f"wrote {out_png}")
