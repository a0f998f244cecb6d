"""The HTTP server: API, micro-batcher, the static page."""
