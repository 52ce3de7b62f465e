"""Deployment: a callable feature extractor and gallery search (exact torch or faiss), saved as folders."""

from __future__ import annotations

from .extractor import FeatureExtractor
from .search import GalleryIndex, checkpoint_mismatch, image_files, topk_exact, write_search_html
from .searcher import NOT_IN_GALLERY, Searcher

__all__ = ["FeatureExtractor", "GalleryIndex", "Searcher", "NOT_IN_GALLERY", "checkpoint_mismatch", "image_files", "topk_exact", "write_search_html"]
