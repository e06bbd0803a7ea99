"""Audits: does a search engine find a person? Our own index (:mod:`.person`), any clip-retrieval engine
(:mod:`.engine`), and identification measured on an index (:mod:`.identification`)."""
