"""Exemplar retrieval over window embeddings."""

from .exemplars import build_index, search_exemplars, exemplar_table

__all__ = ["build_index", "search_exemplars", "exemplar_table"]
