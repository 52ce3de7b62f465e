"""Gallery search: an exact (torch) or faiss inner-product index over L2-normalised features, saved as a folder.

Scores are inner products; for rlq features (L2-normalised, docs/method.md §2.5 step 4) they are cosine
similarities. Both backends are exact (no approximation):

* ``exact``: chunked ``queries @ gallery.T`` in torch and ``torch.topk``; equal scores are ordered by gallery
  index, lower first (including which tied items make the cut at rank k), like the evaluation's stable order.
* ``faiss``: ``faiss.IndexFlatIP`` (brute-force inner product, BLAS); the order of exactly equal scores is
  faiss's own. Install with ``pip install 'rlq[faiss]'``.

A saved index is a folder: ``features.npy`` (float32 N x D, loaded with ``allow_pickle=False``),
``index.json`` (format, version, backend, keys, paths, meta) and, for faiss, ``faiss.index``. The folder is
built next to the target and renamed into place, so a reader never sees a half-written index.

Integrity (version 2): ``index.json`` records the SHA-256 and size of every data file, the features' shape,
dtype and whether their rows are L2-normalised, and a SHA-256 of its own record (keys, paths, meta).
:meth:`GalleryIndex.load` checks all of them and refuses a mismatch (a flipped byte, a truncated or swapped
file) with a :class:`~rlq.errors.CheckpointError` naming the file and how to rebuild the index; loaded
features must be finite, and unit-length when recorded so. Version-1 folders (written before checksums)
still load, with a warning, when their features are finite and unit-length; otherwise they are refused
with the rebuild hint (docs/design.md, Habits).
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import shutil
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import IMAGE_EXTENSIONS, image_files
from ..errors import CheckpointError, RlqError
from ..evaluation.rerank import topk_rows
from ..io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    json_dumps,
    replace_dir,
    sha256_file,
)

__all__ = [
    "BACKENDS",
    "GalleryIndex",
    "topk_exact",
    "image_files",
    "IMAGE_EXTENSIONS",
    "write_search_html",
    "checkpoint_mismatch",
    "model_identity",
    "weights_sha256",
]

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("exact", "faiss")
INDEX_FORMAT = "rlq-gallery-index"
INDEX_VERSION = 2  # 2: checksums of the data files and of the record (version 1 still loads, see above)
LEGACY_VERSIONS = (1,)
FEATURES_FILE = "features.npy"
INDEX_FILE = "index.json"
FAISS_FILE = "faiss.index"
_SCORE_BUDGET_BYTES = 256 * 2**20  # one chunk's query x gallery score block
_CHECK_ROWS = 16384  # rows per block when validating features
_NORM_TOL = 1e-3  # |row norm - 1| above this: not L2-normalised (float32 rounding is ~1e-7)


def _import_faiss():
    try:
        import faiss
    except ImportError as e:
        raise RlqError(
            f"backend 'faiss' needs the faiss package, which is not installed ({e}); install the extra with "
            "`pip install 'rlq[faiss]'` (faiss-cpu) or use backend 'exact'"
        ) from None
    return faiss


def _as_float32_2d(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2 or a.dtype.kind != "f":
        raise RlqError(f"{what} must be a 2-D float array (rows x dims), got {a.dtype} {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    for start in range(0, a.shape[0], _CHECK_ROWS):  # blocks: no full-size temporaries for multi-GB galleries
        block = a[start : start + _CHECK_ROWS]
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise RlqError(f"{what} has NaN or infinite values (first in row {bad})")
    return a


def _norm_range(a: np.ndarray) -> tuple[float, float]:
    """(min, max) row L2 norm, computed block by block."""
    lo, hi = np.inf, -np.inf
    for start in range(0, a.shape[0], _CHECK_ROWS):
        block = a[start : start + _CHECK_ROWS]
        n = np.sqrt(np.einsum("ij,ij->i", block, block))
        lo, hi = min(lo, float(n.min())), max(hi, float(n.max()))
    return lo, hi


@torch.no_grad()
def topk_exact(queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of each query row against the gallery rows; ties go to the lower gallery index."""
    nq, n = queries.shape[0], gallery.shape[0]
    k = min(k, n)
    if chunk_size is None:
        chunk_size = max(1, _SCORE_BUDGET_BYTES // max(1, 4 * n))
    scores_out = torch.empty((nq, k), dtype=torch.float32)
    index_out = torch.empty((nq, k), dtype=torch.int64)
    if k <= 0:
        return scores_out, index_out
    for a in range(0, nq, chunk_size):
        vals, idx = topk_rows(queries[a : a + chunk_size] @ gallery.T, k)
        scores_out[a : a + chunk_size] = vals.float().cpu()
        index_out[a : a + chunk_size] = idx.cpu()
    return scores_out, index_out


class GalleryIndex:
    """Gallery features (N x D float32) with their keys, paths and meta; searched exactly (torch) or with faiss."""

    def __init__(
        self,
        features: Any,
        keys: Sequence[str] | np.ndarray,
        *,
        paths: Sequence[str] | np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
        backend: str = "exact",
        _faiss_index: Any = None,
    ) -> None:
        if backend not in BACKENDS:
            raise RlqError(f"unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
        self.features = _as_float32_2d(features, "gallery features")
        n = self.features.shape[0]
        self.keys = np.asarray([str(k) for k in keys], dtype=np.str_) if len(keys) else np.zeros(0, np.str_)
        if self.keys.shape != (n,):
            raise RlqError(f"gallery has {n} feature rows but {len(self.keys)} keys")
        self.paths = None if paths is None else np.asarray([str(p) for p in paths], dtype=np.str_).reshape(-1)
        if self.paths is not None and self.paths.shape != (n,):
            raise RlqError(f"gallery has {n} feature rows but {len(self.paths)} paths")
        self.meta: dict[str, Any] = dict(meta or {})
        self.backend = backend
        self.normalised = True
        if n:
            lo, hi = _norm_range(self.features)
            if lo < 1 - _NORM_TOL or hi > 1 + _NORM_TOL:
                self.normalised = False
                log.warning("gallery features are not L2-normalised (norms %.4g..%.4g): scores are inner products, "
                            "not cosine similarities", lo, hi)
        self._faiss = None
        if backend == "faiss":
            self._faiss = _faiss_index if _faiss_index is not None else self._build_faiss()
        self._torch_cache: tuple[torch.device, torch.Tensor] | None = None

    @classmethod
    def build(
        cls,
        features: Any,
        keys: Sequence[str] | np.ndarray,
        backend: str = "exact",
        *,
        paths: Sequence[str] | np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> GalleryIndex:
        """An index over ``features`` (rows in the order of ``keys``) with the given backend."""
        return cls(features, keys, paths=paths, meta=meta, backend=backend)

    @classmethod
    def from_features_file(cls, path: str | os.PathLike, *, split: str | None = None, backend: str = "exact") -> GalleryIndex:
        """An index over one split of an rlq features file (``rlq extract``); the file's meta travels along."""
        from ..evaluation.protocols import features_meta, load_features

        feats, labels = load_features(path)
        if split is None:
            if len(feats) == 1:
                split = next(iter(feats))
            elif "gallery" in feats:
                split = "gallery"
            else:
                raise RlqError(f"features file {os.fspath(path)} has splits {sorted(feats)}; choose one (--split NAME)")
        if split not in feats:
            raise RlqError(f"features file {os.fspath(path)} has no split {split!r}; it has {sorted(feats)}")
        lab = labels.get(split)
        n = feats[split].shape[0]
        keys = lab.keys if lab is not None else np.array([str(i) for i in range(n)])
        paths = lab.paths if lab is not None else None
        extra = dict(features_meta(path).get("extra") or {})
        meta = {**extra, "features_file": os.path.abspath(path), "split": split}
        return cls(feats[split], keys, paths=paths, meta=meta, backend=backend)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])

    def __repr__(self) -> str:
        return f"GalleryIndex(n={len(self)}, dim={self.dim}, backend={self.backend!r})"

    def _build_faiss(self):
        faiss = _import_faiss()
        index = faiss.IndexFlatIP(self.dim)
        if len(self):
            index.add(self.features)
        return index

    def search(self, queries: Any, k: int = 10, *, device: str | torch.device | None = None,
               chunk_size: int | None = None, rerank: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 Q x k', gallery indices int64 Q x k'), best first, k' = min(k, len(gallery)).

        Scores are cosine similarities (higher = closer). With ``rerank`` (a
        :class:`~rlq.evaluation.rerank.RerankSettings`) the ranking is by k-reciprocal re-ranked distance over
        queries ∪ gallery (exact torch, whatever the backend) and the scores are those distances (lower = closer).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RlqError(f"k must be a positive integer, got {k!r}")
        q = _as_float32_2d(queries, "queries")
        if q.shape[1] != self.dim:
            raise RlqError(f"queries are {q.shape[1]}-d but the gallery features are {self.dim}-d; extract both with "
                           "the same checkpoint")
        k = min(k, len(self))
        if k == 0 or q.shape[0] == 0:
            return np.zeros((q.shape[0], k), np.float32), np.zeros((q.shape[0], k), np.int64)
        if rerank is not None:
            return self._search_reranked(q, k, rerank, device, chunk_size)
        if self.backend == "faiss":
            scores, idx = self._faiss.search(q, k)
            return np.asarray(scores, np.float32), np.asarray(idx, np.int64)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if self._torch_cache is None or self._torch_cache[0] != dev:
            g = torch.from_numpy(self.features)
            self._torch_cache = (dev, g.to(dev) if dev.type != "cpu" else g)
        s, i = topk_exact(torch.from_numpy(q).to(dev), self._torch_cache[1], k, chunk_size)
        return s.numpy(), i.numpy()

    def _search_reranked(self, q: np.ndarray, k: int, settings: Any, device: Any, chunk_size: int | None
                         ) -> tuple[np.ndarray, np.ndarray]:
        from ..evaluation.rerank import rerank_chunks, topk_rows

        dev = torch.device(device) if device is not None else torch.device("cpu")
        scores = np.empty((q.shape[0], k), np.float32)
        index = np.empty((q.shape[0], k), np.int64)
        for a, b, D in rerank_chunks(torch.from_numpy(q).to(dev), torch.from_numpy(self.features).to(dev), settings,
                                     chunk_size=chunk_size):
            s, i = topk_rows(-D, k)  # smallest distance first; equal distances: lower gallery index first
            scores[a:b], index[a:b] = (-s).cpu().numpy(), i.cpu().numpy()
        return scores, index

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index folder (features.npy, index.json[, faiss.index]); replaces an existing index folder."""
        final = Path(path)
        if final.exists() and not (final.is_dir() and ((final / INDEX_FILE).is_file() or not any(final.iterdir()))):
            raise RlqError(f"{final} exists and is not a gallery index folder; choose another path or remove it")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with atomic_open(tmp / FEATURES_FILE, "wb") as fh:
                np.save(fh, self.features, allow_pickle=False)
            if self._faiss is not None:
                # written straight into the temporary folder, which is renamed into place only when complete
                _import_faiss().write_index(self._faiss, str(tmp / FAISS_FILE))
            files = {name: {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
                     for name in (FEATURES_FILE, FAISS_FILE) if (tmp / name).is_file()}
            record = {
                "format": INDEX_FORMAT, "version": INDEX_VERSION, "backend": self.backend, "num": len(self),
                "dim": self.dim, "keys": self.keys.tolist(),
                "paths": None if self.paths is None else self.paths.tolist(), "meta": self.meta,
                "features": {"shape": [len(self), self.dim], "dtype": "float32", "l2_normalised": self.normalised},
                "files": files,
            }
            atomic_write_json(tmp / INDEX_FILE, {**record, "record_sha256": _record_sha256(record)})
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str | None = None, mmap: bool = False) -> GalleryIndex:
        """Read an index folder written by :meth:`save`; ``backend`` None keeps the saved one."""
        p = Path(path)
        info_path = p / INDEX_FILE
        if not info_path.is_file():
            raise CheckpointError(f"{p} is not a gallery index folder (no {INDEX_FILE}); build one with "
                                  "`rlq search ... --save-index DIR` or GalleryIndex.save")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {info_path}: {e}") from None
        versions = (INDEX_VERSION, *LEGACY_VERSIONS)
        if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT or info.get("version") not in versions:
            raise CheckpointError(f"{info_path} is not an rlq gallery index (format {INDEX_FORMAT!r} version "
                                  f"{' or '.join(map(str, versions))})")
        hint = _rebuild_hint(p, info)
        legacy = info["version"] in LEGACY_VERSIONS
        files: dict[str, Any] = {}
        if legacy:
            log.warning("gallery index %s was written before rlq recorded checksums (version %s): its files cannot be "
                        "checked for corruption; %s", p, info["version"], hint)
        else:
            files = _verify_record(p, info, hint)
        try:
            feats = np.load(p / FEATURES_FILE, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {p / FEATURES_FILE}: {e}; {hint}") from None
        if feats.ndim != 2 or feats.shape != (info.get("num"), info.get("dim")):
            raise CheckpointError(f"{p / FEATURES_FILE} has shape {feats.shape}, {INDEX_FILE} says "
                                  f"({info.get('num')}, {info.get('dim')}); {hint}")
        _check_loaded_features(p / FEATURES_FILE, feats, info, legacy, hint)
        saved = info.get("backend", "exact")
        backend = backend or saved
        fidx = None
        # a version-2 faiss.index is used only when index.json vouches for it (checked above)
        if backend == "faiss" and saved == "faiss" and (p / FAISS_FILE).is_file() and (legacy or FAISS_FILE in files):
            faiss = _import_faiss()
            try:
                fidx = faiss.read_index(str(p / FAISS_FILE))
            except RuntimeError as e:
                raise CheckpointError(f"cannot read {p / FAISS_FILE}: {e}; {hint}") from None
            if fidx.ntotal != feats.shape[0] or fidx.d != feats.shape[1]:
                raise CheckpointError(f"{p / FAISS_FILE} holds {fidx.ntotal} x {fidx.d}, features are {feats.shape}; "
                                      f"{hint}")
        return cls(feats, info.get("keys") or [], paths=info.get("paths"), meta=info.get("meta") or {},
                   backend=backend, _faiss_index=fidx)


def _record_sha256(record: Mapping[str, Any]) -> str:
    """SHA-256 of an index record (everything in index.json but this hash), as canonical strict JSON."""
    import hashlib

    body = {k: v for k, v in record.items() if k != "record_sha256"}
    body = json.loads(json_dumps(body))  # as read back: tuples are lists, keys strings (same hash on save and load)
    return hashlib.sha256(json_dumps(body, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


def _rebuild_hint(folder: Path, info: Mapping[str, Any]) -> str:
    """How to rebuild the index folder: the `rlq search` command that writes it (docs/design.md, Habits)."""
    meta = info.get("meta") if isinstance(info.get("meta"), Mapping) else {}
    src = meta.get("features_file") or "FEATURES.npz"
    split = f" --split {meta['split']}" if meta.get("split") else ""
    return (f"rebuild the index from the features file it was made from: `rlq search --gallery {src}{split} "
            f"--query IMAGES --out PAGE.html --save-index {folder}` (or GalleryIndex.save)")


def _verify_record(folder: Path, info: Mapping[str, Any], hint: str) -> dict[str, Any]:
    """Check index.json's own hash and every data file's size and SHA-256; returns the recorded files."""
    info_path = folder / INDEX_FILE
    if info.get("record_sha256") != _record_sha256(info):
        raise CheckpointError(f"{info_path} does not match its own checksum (record_sha256): the keys, paths or meta "
                              f"were altered or corrupted; {hint}")
    files = info.get("files")
    feats = info.get("features")
    if not isinstance(files, Mapping) or FEATURES_FILE not in files or not isinstance(feats, Mapping):
        raise CheckpointError(f"{info_path} lacks the checksums of its data files; {hint}")
    if info.get("backend") == "faiss" and FAISS_FILE not in files:
        raise CheckpointError(f"{info_path} is a faiss index but records no {FAISS_FILE}; {hint}")
    for name, want in files.items():
        f = folder / name
        if name not in (FEATURES_FILE, FAISS_FILE) or not isinstance(want, Mapping):
            raise CheckpointError(f"{info_path} records an unexpected file {name!r}; {hint}")
        if not f.is_file():
            raise CheckpointError(f"{f} is missing (recorded in {INDEX_FILE}); {hint}")
        size = f.stat().st_size
        if size != want.get("size"):
            raise CheckpointError(f"{f} is {size} bytes, {INDEX_FILE} records {want.get('size')} (truncated or "
                                  f"replaced); {hint}")
        have = sha256_file(f)
        if have != want.get("sha256"):
            raise CheckpointError(f"{f} does not match its SHA-256 in {INDEX_FILE} ({have[:12]}... vs "
                                  f"{str(want.get('sha256'))[:12]}...): the file is corrupted or was altered; {hint}")
    return dict(files)


def _check_loaded_features(path: Path, feats: np.ndarray, info: Mapping[str, Any], legacy: bool, hint: str) -> None:
    """Loaded features: the recorded dtype and shape, finite, and unit rows when recorded so (all version-1
    indexes: rlq's features are L2-normalised, docs/method.md §2.5, and a long row is how corruption shows)."""
    rec = info.get("features") or {}
    if not legacy:
        if feats.dtype != np.dtype(str(rec.get("dtype"))) or list(feats.shape) != list(rec.get("shape") or []):
            raise CheckpointError(f"{path} holds {feats.dtype} {list(feats.shape)}, {INDEX_FILE} records "
                                  f"{rec.get('dtype')} {rec.get('shape')}; {hint}")
    if feats.dtype.kind != "f":
        raise CheckpointError(f"{path} holds {feats.dtype} values, not floats; {hint}")
    unit = legacy or bool(rec.get("l2_normalised"))
    for start in range(0, feats.shape[0], _CHECK_ROWS):
        block = np.asarray(feats[start : start + _CHECK_ROWS], dtype=np.float32)
        ok = np.isfinite(block).all(axis=1)
        if not ok.all():
            raise CheckpointError(f"{path} has NaN or infinite values (row {start + int(np.flatnonzero(~ok)[0])}); {hint}")
        if unit:
            norm = np.sqrt(np.einsum("ij,ij->i", block, block))
            bad = np.flatnonzero(np.abs(norm - 1) > _NORM_TOL)
            if bad.size:
                i = int(bad[0])
                raise CheckpointError(f"{path} row {start + i} has L2 norm {norm[i]:.4g}, but the gallery features "
                                      f"are L2-normalised{' (rlq features)' if legacy else ''}: the file is corrupted; "
                                      f"{hint}")


# -- checkpoint identity --------------------------------------------------------------------------------
def weights_sha256(checkpoint: str | os.PathLike) -> str | None:
    """SHA-256 of a checkpoint's ``weights.safetensors``: read from its manifest (written with the
    checkpoint, so nothing is re-hashed), hashed from the file only when there is no manifest."""
    from ..engine.checkpoint import MANIFEST, WEIGHTS, resolve_checkpoint
    from ..io import sha256_file

    ck = resolve_checkpoint(checkpoint)
    try:
        mf = json.loads((ck / MANIFEST).read_text(encoding="utf-8"))
        return str(mf["files"][WEIGHTS]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return sha256_file(ck / WEIGHTS) if (ck / WEIGHTS).is_file() else None


def model_identity(checkpoint: str | os.PathLike, input_size: Sequence[int], flip: bool = True,
                   precision: str = "fp32") -> dict[str, Any]:
    """What makes two sets of features comparable, recorded in features files and gallery indexes: the
    weights (by content), the preprocessing (docs/method.md §2.5: PIL bilinear resize to ``input_size``,
    uint8, /255, the model's own ImageNet normalisation, flip-sum when ``flip``) and the precision the
    features were computed in (``fp32``, ``bf16`` or ``fp16`` autocast)."""
    return {"weights_sha256": weights_sha256(checkpoint),
            "preprocessing": {"input_size": [int(input_size[0]), int(input_size[1])], "flip": bool(flip),
                              "resize": "PIL bilinear, uint8", "normalization": "in-model ImageNet mean/std"},
            "precision": str(precision)}


def checkpoint_mismatch(recorded: str | Mapping[str, Any] | None, given: str | os.PathLike) -> str | None:
    """None when the checkpoint ``given`` holds the weights a gallery was extracted with, else the reason.

    ``recorded`` is the gallery's meta (or, for old files, just its checkpoint path). Weights are compared
    by content (``weights_sha256``): a checkpoint retrained or altered at the same path is refused, a copy
    of the same weights elsewhere is accepted. Meta from before content hashes falls back to the path and
    the manifests' hashes.
    """
    from ..engine.checkpoint import resolve_checkpoint

    meta = dict(recorded) if isinstance(recorded, Mapping) else {"checkpoint": recorded}
    path = meta.get("checkpoint")
    want = meta.get("weights_sha256")
    g = resolve_checkpoint(given).resolve()
    if want:
        have = weights_sha256(g)
        if have == want:
            return None
        return (f"the gallery was extracted with weights sha256 {str(want)[:12]}... ({path}); {g} now holds "
                f"{str(have)[:12]}... (retrained or altered: different weights)")
    if not path:
        return "the gallery does not record which checkpoint extracted it"
    r = Path(path)
    if r.exists():
        r = r.resolve()
        if r == g:
            return None
        a, b = weights_sha256(r), weights_sha256(g)
        if a is not None and a == b:
            return None
        return f"the gallery was extracted with {r}, not {g} (different weights)"
    return f"the gallery was extracted with {path}, which no longer exists, not {g}"


# -- HTML report --------------------------------------------------------------------------------------------
def _thumbnail(path: str | None, height: int) -> bytes | None:
    """JPEG bytes of the image scaled to ``height`` (aspect kept), or None when it cannot be read."""
    from PIL import Image

    from ..data.images import read_image

    if not path:
        return None
    try:
        img = read_image(path)
    except RlqError:
        return None
    w = max(1, round(img.width * height / img.height))
    buf = io.BytesIO()
    img.resize((w, height), Image.BILINEAR).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _gallery_path(index: GalleryIndex, i: int) -> str | None:
    p = str(index.paths[i]) if index.paths is not None else None
    if p and os.path.isfile(p):
        return p
    root = index.meta.get("images_root")
    if root and os.path.isfile(os.path.join(root, str(index.keys[i]))):
        return os.path.join(root, str(index.keys[i]))
    return p


_CSS = """body{font-family:sans-serif;margin:1em;background:#fafafa}
.q{display:flex;align-items:flex-start;gap:8px;margin:12px 0;padding:8px;background:#fff;border:1px solid #ddd}
.c{text-align:center;font-size:11px;max-width:140px;word-break:break-all}
.c img{height:%dpx;display:block;margin:0 auto 2px}.query{border-right:2px solid #333;padding-right:8px}
.missing{height:%dpx;width:64px;background:#eee;display:flex;align-items:center;justify-content:center}
.meta{color:#555;font-size:12px}"""


def write_search_html(
    out_html: str | os.PathLike,
    query_keys: Sequence[str],
    query_paths: Sequence[str],
    scores: np.ndarray,
    indices: np.ndarray,
    index: GalleryIndex,
    *,
    title: str = "rlq search",
    info: Mapping[str, Any] | None = None,
    thumb_height: int = 128,
    is_match: np.ndarray | None = None,
) -> Path:
    """A static HTML page of each query and its top-k gallery images; thumbnails go to ``<name>_files/``.

    ``is_match`` (Q x k booleans, open-set search): each result is labelled match / no match, and a query whose
    results are all no match reads "not in the gallery".

    Every key, path and meta value in the page goes through ``html.escape``; links are relative. Returns
    the thumbnails folder.
    """
    out = Path(out_html)
    thumbs = out.parent / f"{out.stem}_files"
    thumbs.mkdir(parents=True, exist_ok=True)
    base = urllib.parse.quote(thumbs.name)
    e = html.escape

    def cell(src_name: str | None, label_lines: Sequence[str], tip: str, cls: str = "c") -> str:
        img = (f'<img src="{e(base + "/" + src_name)}" alt="{e(label_lines[-1])}" title="{e(tip)}">' if src_name
               else f'<div class="missing" title="{e(tip)}">no image</div>')
        return f'<div class="{cls}">{img}' + "".join(f"<div>{e(s)}</div>" for s in label_lines) + "</div>"

    done: dict[int, str | None] = {}
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
             f"<style>{_CSS % (thumb_height, thumb_height)}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for k, v in (info or {}).items():
        parts.append(f'<div class="meta"><b>{e(str(k))}</b>: {e(str(v))}</div>')
    parts.append('<div class="meta">Scores are cosine similarities (dot products of L2-normalised features).</div>')
    if is_match is not None:
        parts.append('<div class="meta">A result is a match when its distance is below the threshold; a query '
                     'without a match is labelled so.</div>')
    for qi, (qk, qp) in enumerate(zip(query_keys, query_paths)):
        name = f"q{qi:05d}.jpg"
        data = _thumbnail(qp, thumb_height)
        if data is not None:
            atomic_write_bytes(thumbs / name, data, fsync=False)
        qlabel = ["query", str(qk)]
        if is_match is not None and not np.asarray(is_match[qi]).any():
            qlabel.insert(1, "not in the gallery")  # (the last line is the image's alt text: the key)
        row = [cell(name if data is not None else None, qlabel, str(qp), "c query")]
        for r, (s, gi) in enumerate(zip(scores[qi], indices[qi])):
            gi = int(gi)
            if gi < 0:  # faiss pads with -1 when the gallery is smaller than k
                continue
            if gi not in done:
                gname = f"g{gi:07d}.jpg"
                gdata = _thumbnail(_gallery_path(index, gi), thumb_height)
                if gdata is not None:
                    atomic_write_bytes(thumbs / gname, gdata, fsync=False)
                done[gi] = gname if gdata is not None else None
            gp = _gallery_path(index, gi) or ""
            lines = [f"#{r + 1}  {float(s):.4f}", str(index.keys[gi])]
            if is_match is not None:
                lines.append("match" if bool(is_match[qi][r]) else "no match")
            row.append(cell(done[gi], lines, gp))
        parts.append('<div class="q">' + "".join(row) + "</div>")
    parts.append("</body></html>\n")
    atomic_write_text(out, "\n".join(parts))
    return thumbs
