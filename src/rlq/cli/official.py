"""`rlq import-official`: turn the authors' released .pth.tar checkpoints into rlq checkpoint folders."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import app, console, human, json_option, write_json


@app.command("import-official")
def import_official_cmd(
    checkpoint: Path = typer.Argument(..., help="The authors' checkpoint (best_model.pth.tar, checkpoint_epN.pth.tar) or a bare model state dict."),
    method: str = typer.Option(..., "--method", "-m", help="rlq or cap (backbone resnet50_joint3_3, with the pose branch); bm or tad (resnet50_joint2, e.g. the Celeb-reID teacher)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write (must not exist or be empty)."),
    num_ids: int | None = typer.Option(None, "--num-ids", help="Train identities C, checked against the file's identity heads (LTCC 77, PRCC 150, LaST 5000, DeepChange 450, Celeb-reID 632); read from the file when left out."),
    pose_clusters: int | None = typer.Option(None, "--pose-clusters", help="Pose clusters K (15 in the paper; rlq/cap only), checked against the pose head's K+1 classes; read from the file when left out."),
    num_clothes: int | None = typer.Option(None, "--num-clothes", help="Clothes classes, checked against the clothes head; read from the file when left out."),
    role: str = typer.Option("model", "--role", help="model, or teacher to mark it as a TAD teacher (tad.teacher=FOLDER)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Training dataset name to record (for model cards), e.g. ltcc or celebreid."),
    no_clothes_head: bool = typer.Option(False, "--no-clothes-head", help="Leave the clothes head out (LaST's has 803 M parameters; inference and TAD teachers never use it)."),
    json_out: Path | None = json_option(),
) -> None:
    """Import an official RLQ-CGAL-UBD checkpoint (safe loading, every key and shape checked).

    The folder it writes works with `rlq eval`, `extract`, `search`, `export` and as TAD's teacher.
    """
    from ..engine.model_io import import_official

    res = import_official(checkpoint, out_dir, method=method, num_ids=num_ids, pose_clusters=pose_clusters,
                          num_clothes=num_clothes, role=role, dataset=dataset, clothes_head=not no_clothes_head)
    write_json(json_out, {
        "checkpoint": str(res.checkpoint), "method": res.method, "role": res.role, "num_ids": res.num_ids,
        "pose_clusters": res.pose_clusters, "num_clothes": res.num_clothes,
        "official_backbone": res.official_backbone, "missing_heads": res.missing_heads, "notes": res.notes})
    out = human(json_out)
    out.print(f"imported {checkpoint} ({res.official_backbone}) as rlq method {res.method!r}, role {res.role!r}: "
              f"{res.num_ids} identities"
              + (f", K = {res.pose_clusters} pose clusters" if res.pose_clusters else "")
              + (f", {res.num_clothes} clothes classes" if res.num_clothes else ""))
    for note in res.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    out.print(f"checkpoint folder: {res.checkpoint}")
    console.print(f"next: rlq eval {res.checkpoint} --dataset NAME --root DIR", highlight=False)
