"""Exemplar retrieval over window embeddings."""

from .exemplars import build_index, exemplar_table, search_exemplars

__all__ = ["build_index", "search_exemplars", "exemplar_table"]
