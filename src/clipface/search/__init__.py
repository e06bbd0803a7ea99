"""The face search engine's store: FAISS vectors with SQLite metadata, ingestion, shards, Ray, identification and
audits."""
