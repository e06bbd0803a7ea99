"""Embeddings: the pipeline from image files to vectors, and the on-disk cache that makes runs resumable."""
