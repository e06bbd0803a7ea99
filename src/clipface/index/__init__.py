"""The face search index: FAISS vectors with SQLite metadata (:mod:`.store`), ingestion, shards, faces and Ray.

How vectors are searched (exact, IVF and HNSW, ``nprobe`` tuning) is :mod:`.ann`.
"""
