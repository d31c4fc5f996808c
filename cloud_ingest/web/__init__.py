"""The evaluator's web app: read-only pages, SVG charts and a JSON API over the ingest's store (docs/web.md)."""
