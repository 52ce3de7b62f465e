"""Model cards for exported models, and the responsible-use text of person re-identification.

:func:`build_model_card` fills :data:`MODEL_CARD_TEMPLATE` (``string.Template``) from a checkpoint's state,
its run's ``results.json`` (when present) and the export's parity-check numbers. Metrics are labelled with
the rule that selected them: a checkpoint chosen on the test set (the paper's convention, docs/method.md §7) is
an optimistic estimate and the card says so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from ..report_format import pct as fmt_pct

__all__ = ["MODEL_CARD_TEMPLATE", "build_model_card", "find_run_results", "responsible_use_text"]

log = logging.getLogger(__name__)


def _method_entry(method: Any):
    """The registry entry of a checkpoint's method (docs/design.md "Adding a method"), or None for a method this
    rlq does not know (e.g. one registered by a script that is not loaded now)."""
    from ..methods.registry import get_method, method_names

    return get_method(method) if isinstance(method, str) and method in method_names() else None

_SELECTIONS: tuple[tuple[str, str], ...] = (
    ("test@best_test", "best epoch **selected on the test set** (paper convention; an optimistic estimate)"),
    ("test@best_val", "best epoch selected on a validation set (an unbiased estimate)"),
    ("test@last", "last epoch (no selection)"),
)

_RESPONSIBLE_USE = """\
## Responsible use

rlq trains and runs **person re-identification** (ReID) models: given an image of a person, they rank
other images by how likely they are to show the same person, even after a change of clothes. This is a
research tool for studying robustness to clothing changes and low-quality images. Re-identifying people
can harm them, and a model that works across clothing changes makes long-term tracking easier, so:

**Intended use.** Research and teaching on re-identification methods; benchmarking on the public
datasets the models were trained on (LTCC, PRCC, LaST, DeepChange, Celeb-reID) under their licences;
synthetic data such as SynthCC; consented, lawful settings where everyone recorded has been informed
and a legal basis exists (e.g. studies approved by an ethics board).

**Prohibited and out-of-scope uses.**
- Surveillance, monitoring or tracking of individuals or groups without their informed consent and a
  clear legal basis (e.g. GDPR / local data-protection law), including mass surveillance of public spaces.
- Identifying people, i.e. linking an image to a name, an account or another identity. The model only
  compares images; it does not and must not be used to establish who someone is.
- Profiling or targeting people by protected attributes. The gender and pose heads of CAP are training
  aids: their gender labels are coarse, binary, annotator-assigned appearance labels, not anyone's
  gender identity, and the models must not be used to infer gender or any other sensitive attribute.
- Any decision with legal or similarly significant effects on a person (policing, immigration,
  employment, access to services) based on model scores.

**Bias and limitations.** The training datasets come from a few specific sources (a handful of indoor
and campus camera networks, movie frames, web photos of celebrities); they under-represent many ages, body types, skin tones, clothing styles and camera conditions, and
their identity and gender balance is uneven. Accuracy is far from perfect even on the test sets (the paper's
best model reaches about 46 % rank-1 on LTCC's clothes-changing protocol) and drops further on images
unlike the training data; errors are not evenly distributed across groups of people. Similarity scores are not
probabilities and are not calibrated across datasets or cameras. Evaluate on data from the intended
setting, with the people concerned in mind, before drawing any conclusion.

**Data protection.** Person images and the features extracted from them are personal data: store them
securely, keep them only as long as needed, and delete them on request. Do not redistribute dataset
images beyond what their licences allow.
"""


def responsible_use_text() -> str:
    """The responsible-use section (markdown) shared by docs/responsible-use.md and every model card."""
    return _RESPONSIBLE_USE


MODEL_CARD_TEMPLATE = Template("""\
# Model card: $title

Exported by rlq $rlq_version (torch $torch_version) from `$checkpoint`.

## Model details

| | |
|---|---|
| Method | $method_name (`$method`) |
| Backbone | $backbone |
| Input | `images`: float32 RGB in [0, 1], N x 3 x $height x $width (batch axis dynamic) |
| Output | `features`: float32 N x $embed_dim, L2-normalised: compare two features with their dot product (cosine similarity) |
| Feature | $feature_parts post-BN-neck features$flip_text, one global L2 normalisation (docs/method.md §2.5) |
| Flip and precision | flip **$flip_on_off**$flip_origin; computed in $precision |
| Normalisation | ImageNet mean/std, applied **inside** the model (feed raw 0-1 RGB) |
| ONNX | `$onnx_file`, opset $opset, SHA-256 `$sha256` |

CAP (pose and gender heads) and TAD (distillation) act only during training: the exported network is the
trunk and the CAL/BOT branches with their BN-necks; no classification heads are included.

## Training data

$training

## Metrics

$settings_note

$metrics

## Parity check (ONNX Runtime vs PyTorch)

$parity

## How to use

Resize each image to $height x $width (H x W) with bilinear interpolation (PIL `Image.BILINEAR`, as in
evaluation), scale to [0, 1], stack as N x 3 x H x W RGB, and run:

```python
import numpy as np, onnxruntime as ort
from PIL import Image

sess = ort.InferenceSession("$onnx_file", providers=["CPUExecutionProvider"])
def embed(paths):
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize(($width, $height), Image.BILINEAR))
                  for p in paths]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return sess.run(["features"], {"images": x})[0]   # N x $embed_dim, unit length

q, g = embed(["query.jpg"]), embed(["a.jpg", "b.jpg"])
scores = q @ g.T   # cosine similarity; higher = more similar; rank the gallery by it
```

Or from Python with PyTorch: `rlq.FeatureExtractor("$checkpoint_short")(paths)`; from the command line:
`rlq search --gallery FEATURES.npz --query IMAGE --top-k 10 --out result.html`.

$responsible
""")


def find_run_results(checkpoint: str | os.PathLike | None) -> tuple[Path | None, dict[str, Any] | None]:
    """The ``results.json`` of the run that wrote ``checkpoint`` (``<run>/checkpoints/<name>``), if any."""
    if not checkpoint:
        return None, None
    ck = Path(checkpoint)
    candidates = [ck / "results.json"]
    if ck.parent.name == "checkpoints":
        candidates.append(ck.parent.parent / "results.json")
    for c in candidates:
        if c.is_file():
            try:
                data = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable %s: %s", c, e)
                continue
            if isinstance(data, dict):
                return c, data
    return None, None


def _pct(v: Any) -> str:
    try:
        return f"{100 * float(v):.1f}"
    except (TypeError, ValueError):
        return "-"


def _metrics_table(results: Mapping[str, Any]) -> list[str]:
    rows = ["| evaluation | R1 (%) | R5 (%) | mAP (%) | valid / queries |", "|---|---|---|---|---|"]
    for name, r in results.items():
        if isinstance(r, Mapping):
            rows.append(f"| {name} | {_pct(r.get('rank1'))} | {_pct(r.get('rank5'))} | {_pct(r.get('mAP'))} | "
                        f"{r.get('num_valid_queries', '-')} / {r.get('num_queries', '-')} |")
    return rows


def _metrics_section(state: Mapping[str, Any], results: Mapping[str, Any] | None, results_path: str | None) -> str:
    lines: list[str] = []
    sel = state.get("selected_on")
    if sel or state.get("epoch") is not None:
        rule = {"test": "selected on the **test set** (optimistic)", "val": "selected on a validation set"}.get(
            str(sel), "not selected (a periodic or final checkpoint)")
        lines.append(f"This checkpoint: epoch {state.get('epoch', '?')}, {rule}.")
    if not results:
        own = state.get("results")
        if isinstance(own, Mapping) and own:
            lines += ["", "Test results recorded in the checkpoint (fractions shown as %):", "", *_metrics_table(own)]
        else:
            lines.append("No evaluation results were found next to this checkpoint (no run `results.json`). "
                         "Evaluate it with `rlq eval CHECKPOINT --dataset NAME --root DIR` before relying on it.")
        return "\n".join(lines)
    metric = results.get("selection_metric")
    lines += ["", f"From `{results_path}` (selection metric: `{metric}` rank-1). Metrics are in %."]
    found = False
    for key, label in _SELECTIONS:
        block = results.get(key)
        if not isinstance(block, Mapping) or not isinstance(block.get("results"), Mapping):
            continue
        found = True
        lines += ["", f"**{key}** — {label}, epoch {block.get('epoch', '?')}:", "", *_metrics_table(block["results"])]
    off = results.get("official")
    if isinstance(off, Mapping):
        lines += ["", f"Paper-style summary (selected on test): R1 {_pct(off.get('rank1'))}, mAP (maximum over all "
                  f"evaluations, possibly another epoch) {_pct(off.get('mAP_max_over_evaluations'))}."]
    if not found:
        lines.append("The results file holds no evaluation yet.")
    return "\n".join(lines)


def _training_section(state: Mapping[str, Any]) -> str:
    spec = state.get("spec") if isinstance(state.get("spec"), Mapping) else None
    dataset = state.get("dataset") or (spec or {}).get("data", {}).get("dataset")
    if not spec and not dataset:
        return ("Unknown: the checkpoint records no dataset or run spec (a weights-only checkpoint). Do not assume "
                "anything about its training data.")
    rows = ["| | |", "|---|---|", f"| Dataset | {dataset or 'unknown'} |"]
    if state.get("num_train_ids") is not None:
        rows.append(f"| Train identities / outfits | {state.get('num_train_ids')} / {state.get('num_train_clothes', '?')} |")
    if spec:
        d, m, o, t, tad = (spec.get(k) or {} for k in ("data", "model", "optim", "train", "tad"))
        rows += [
            f"| Preset | {spec.get('preset', '?')} |",
            f"| Backbone init | {m.get('backbone', '?')}, pretrained={m.get('pretrained', '?')}, split={m.get('split', '?')} |",
            f"| Epochs / batch per replica (P x K) | {t.get('epochs', '?')} / {d.get('batch_size', '?')} "
            f"({d.get('num_instances', '?')} per identity) |",
            f"| Optimiser | lr {o.get('lr', '?')}, weight decay {o.get('weight_decay', '?')}, milestones "
            f"{o.get('milestones', '?')} |",
            f"| Seed / AMP | {t.get('seed', '?')} / {t.get('amp', '?')} |",
            f"| Clothes recolouring | {d.get('recolor', '?')} |",
        ]
        entry = _method_entry(spec.get("method"))
        if entry is not None and entry.parts.pose_branch:
            rows.append(f"| Pose clusters | K = {m.get('pose_clusters', '?')} ({d.get('pose_column', '?')}) |")
        if entry is not None and entry.needs_external:
            rows.append(f"| TAD | variant {tad.get('variant', '?')}, external data {tad.get('external_dataset', '?')}, "
                        f"teacher `{tad.get('teacher')}` |")
    return "\n".join(rows)


def _on_off(flip: bool) -> str:
    return "on" if flip else "off"


def _settings_note(flip: bool, run_flip: bool | None, state: Mapping[str, Any], precision: str) -> str:
    """Whether this model reproduces the run's numbers: the same flip (the run's ``eval.flip``) and precision."""
    if run_flip is None:
        return (f"The checkpoint records no run spec, so the settings behind any numbers below are unknown; this model "
                f"uses flip {_on_off(flip)} and {precision}.")
    if run_flip != flip:
        return (f"**This model does not reproduce the numbers below**: they were computed with flip "
                f"{_on_off(run_flip)} (the run's `eval.flip`), and this model was exported with flip {_on_off(flip)}. "
                f"Export without `--flip/--no-flip` to get the run's feature.")
    spec = state.get("spec") if isinstance(state.get("spec"), Mapping) else {}
    amp = str((spec.get("train") or {}).get("amp", "auto"))
    if amp == "off":
        return (f"The numbers below were computed with flip {_on_off(flip)} (the run's `eval.flip`) in fp32 "
                f"(`train.amp=off`): the settings of this model, which reproduces them (the parity check below "
                f"bounds the difference between ONNX Runtime and PyTorch features).")
    return (f"The numbers below were computed with flip {_on_off(flip)} (the run's `eval.flip`), as this model does; "
            f"the run evaluated with `train.amp={amp}` (autocast on CUDA, fp32 on CPU) and this model computes in "
            f"{precision}, so numbers evaluated on CUDA can differ from this model's by that rounding.")


def _parity_section(parity: Mapping[str, Any]) -> str:
    return "\n".join([
        f"- images: {parity.get('num_images')} ({parity.get('images')}), batch sizes {parity.get('batch_sizes')}, "
        f"provider {parity.get('provider')}",
        f"- max |feature difference|: {parity.get('max_abs_diff', float('nan')):.3g}",
        f"- max L2 distance between features: {parity.get('max_l2_diff', float('nan')):.3g}",
        f"- min cosine similarity: {parity.get('min_cosine', float('nan')):.9f}",
        f"- criterion: {parity.get('criterion')} — **{'passed' if parity.get('passed') else 'FAILED'}**",
    ])


def _calibration_section(cal: Mapping[str, Any] | None, flip: bool, precision: str) -> str:
    """The open-set calibration (``rlq calibrate``): thresholds, the split and the measured figures."""
    if not cal:
        return ""
    f = cal.get("features") or {}
    sp = cal.get("split") or {}
    fits = bool(f.get("flip")) == bool(flip) and f.get("precision") == precision and not f.get("rerank")

    def pct(x: Any, ci: Any) -> str:
        def p(v: Any) -> str:
            return "n/a" if v is None or v != v else fmt_pct(v)

        return p(x) + ("" if not ci else f" [{p(ci[0])}, {p(ci[1])}]")

    lines = ["", "### Open-set calibration", "",
             f"Thresholds of `rlq calibrate` ({cal.get('path', 'beside the checkpoint')}): a result is a match when "
             f"its distance ({f.get('distance', '1 - cosine similarity')}) is below the threshold. Features: flip "
             f"{_on_off(bool(f.get('flip')))}, {f.get('precision')}, {f.get('ranking', 'cosine')}"
             + ("." if fits else " — **not** how this exported model computes features, so these thresholds do not "
                "apply to it; recalibrate with the export's settings."),
             f"Split: {sp.get('source')}; mode {sp.get('mode')}; {sp.get('num_known')} known and "
             f"{sp.get('num_unknown')} unknown queries (identities {sp.get('unknown_ids')} made unknown).", "",
             "| target FAR | threshold | FAR % [95 % CI] | DIR % [95 % CI] |", "|---|---|---|---|"]
    for r in cal.get("thresholds") or []:
        t = r.get("threshold")
        lines.append(f"| {r.get('far_target')} | {'inf' if t is None else f'{t:.6g}'} | {pct(r.get('far'), r.get('far_ci'))} "
                     f"| {pct(r.get('dir'), r.get('dir_ci'))} |")
    return "\n".join(lines) + "\n"


def build_model_card(
    *,
    onnx_file: str,
    method: str,
    backbone: str,
    input_size: tuple[int, int],
    embed_dim: int,
    flip: bool,
    opset: int,
    parity: Mapping[str, Any],
    sha256: str,
    checkpoint: str | None = None,
    state: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    results_path: str | os.PathLike | None = None,
    run_flip: bool | None = None,
    precision: str = "fp32",
    calibration: Mapping[str, Any] | None = None,
) -> str:
    """The markdown model card of an exported model; ``run_flip`` is the run's ``eval.flip`` (None: no run spec)
    and says whether the model reproduces the run's numbers (docs/method.md §2.5)."""
    import torch

    import rlq

    state = dict(state or {})
    entry = _method_entry(method)
    h, w = input_size
    ck = checkpoint or "an in-memory model"
    dataset = state.get("dataset")
    title = f"{method} {backbone}" + (f" on {dataset}" if dataset else "")
    return MODEL_CARD_TEMPLATE.substitute(
        title=title,
        rlq_version=rlq.__version__,
        torch_version=torch.__version__,
        checkpoint=ck,
        checkpoint_short=checkpoint or "CHECKPOINT",
        method=method,
        method_name=entry.description if entry is not None else "unknown method",
        backbone=backbone,
        height=h,
        width=w,
        embed_dim=embed_dim,
        feature_parts="f_CAL" if entry is not None and not entry.parts.bot_branch else "[f_CAL, f_BOT]",
        flip_text=", summed over the image and its horizontal flip" if flip else " (no flip)",
        flip_on_off=_on_off(flip),
        flip_origin=("" if run_flip is None else " (the run's `eval.flip`)" if run_flip == flip
                     else f" (the run evaluated with flip {_on_off(run_flip)})"),
        precision=precision,
        settings_note=_settings_note(flip, run_flip, state, precision),
        onnx_file=onnx_file,
        opset=opset,
        sha256=sha256,
        training=_training_section(state),
        metrics=_metrics_section(state, results, None if results_path is None else str(results_path))
        + _calibration_section(calibration, flip, precision),
        parity=_parity_section(parity),
        responsible=responsible_use_text().replace("## Responsible use", "## Intended use, prohibited uses and ethics", 1),
    )
