"""Evaluation: tasks that turn cached embeddings into metrics (pure metrics in :mod:`.metrics`)."""
