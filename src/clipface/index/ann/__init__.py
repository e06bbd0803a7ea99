"""Searching the vectors: exact search (:mod:`.exact`), approximate FAISS indexes (:mod:`.approximate`,
:mod:`.faiss_backend`) with exact re-ranking, and the choice of ``nprobe`` (:mod:`.probe`, :mod:`.tune`)."""
