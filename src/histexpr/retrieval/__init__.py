"""Exemplar retrieval over window embeddings."""

from .exemplars import build_index, exemplar_table, find_exemplars, recall_at_k, search_exemplars, torch_search

__all__ = ["build_index", "search_exemplars", "find_exemplars", "torch_search", "recall_at_k", "exemplar_table"]
