"""The search engine over HTTP: a FastAPI app (JSON API and web page) behind a gate of privacy policies."""
