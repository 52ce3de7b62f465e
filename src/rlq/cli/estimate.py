"""Built-in estimators: `rlq poses estimate` (keypoints) and `rlq parse estimate` (approximate LIP maps).

Both need the optional mediapipe extra, installed in its own environment (mediapipe needs numpy<2).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, out, parse_app, poses_app

_NEEDS = ("Needs the pose extra in its own environment (mediapipe needs numpy<2): "
          "python -m venv venv-pose && venv-pose/bin/pip install 'rlq[pose]'.")  # help is plain text (no rich markup)


def _fail(e: Exception) -> None:
    # The install hint contains 'rlq[pose]': print it without rich markup, which would eat "[pose]".
    from rich.markup import escape

    console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@poses_app.command("estimate", help=(
    "Estimate COCO-17 keypoints with mediapipe (a built-in stand-in for AlphaPose) and write AlphaPose "
    "results JSON: one alphapose-results.json per leaf folder in a tree mirroring --root (default --images), or one file if "
    "--out ends in .json (flat folder). " + _NEEDS))
def poses_estimate(
    images: Path = typer.Option(..., "--images", "-i", help="Folder of person images."),
    out_path: Path = typer.Option(..., "--out", "-o", help="A folder (tree of alphapose-results.json) or a .json file."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Dataset root the output tree mirrors (default: "
                                        "--images); e.g. --images DS/train --root DS writes OUT/train/alphapose-results.json."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into subfolders."),
    model_complexity: int = typer.Option(1, help="mediapipe model: 1 (full) ships in the wheel; 0 / 2 are downloaded."),
    min_confidence: float = typer.Option(0.3, help="mediapipe person-detection threshold."),
    min_height: int = typer.Option(256, help="Upscale shorter images to this height before inference (0: never)."),
    pad: float = typer.Option(0.2, help="Edge-replicated margin added on every side, as a fraction of the height."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from ..attributes.estimators import estimate_poses_tree
    from ..errors import RlqError

    try:
        written = estimate_poses_tree(images, out_path, recursive=recursive, dataset_root=root,
                                      model_complexity=model_complexity, min_confidence=min_confidence,
                                      min_height=min_height, pad=pad, progress=progress)
    except RlqError as e:
        _fail(e)
    n = sum(v[0] for v in written.values())
    found = sum(v[1] for v in written.values())
    out.print(f"wrote {len(written)} file(s) under {out_path}: a person in {found} of {n} images "
              f"(use --keypoints {out_path} with `rlq poses cluster`)")


@parse_app.command("estimate", help=(
    "Approximate LIP parsing maps (a built-in stand-in for SCHP): mediapipe's person mask split into face, hair, "
    "upper clothes, arms, pants and shoes by its keypoints. Writes SCHP-named palette PNGs in a tree under --out "
    "mirroring --root (default --images). " + _NEEDS))
def parse_estimate(
    images: Path = typer.Option(..., "--images", "-i", help="Folder of person images (e.g. a dataset's train/)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Parsing root (mirrors --root)."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Dataset root the output tree mirrors (default: "
                                        "--images); e.g. --images DS/train --root DS writes OUT/train/<stem>.png."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into subfolders."),
    model_complexity: int = typer.Option(1, help="mediapipe model: 1 (full) ships in the wheel; 0 / 2 are downloaded."),
    min_confidence: float = typer.Option(0.3, help="mediapipe person-detection threshold."),
    min_height: int = typer.Option(256, help="Upscale shorter images to this height before inference (0: never)."),
    pad: float = typer.Option(0.2, help="Edge-replicated margin added on every side, as a fraction of the height."),
    conf_threshold: float = typer.Option(0.3, help="Keypoints below this visibility count as missing."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep maps that already exist (resume)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from ..attributes.estimators import estimate_parsing, list_images, require_mediapipe
    from ..errors import RlqError, SideInputError

    try:
        require_mediapipe()
        paths = list_images(images, recursive=recursive, exclude=[out_dir])
        if not paths:
            raise SideInputError(f"no images (.jpg, .jpeg, .png, .bmp) in {images}")
        how = estimate_parsing(paths, out_dir, root if root is not None else images,
                               model_complexity=model_complexity, min_confidence=min_confidence,
                               min_height=min_height, pad=pad, conf_threshold=conf_threshold,
                               skip_existing=skip_existing, progress=progress)
    except RlqError as e:
        _fail(e)
    counts = {k: sum(1 for v in how.values() if v == k) for k in ("pose", "none", "skipped")}
    out.print(f"wrote parsing maps under {out_dir}: {counts['pose']} split from a person, {counts['none']} all "
              f"background (no person found), {counts['skipped']} kept (use data.parsing_root={out_dir})")
