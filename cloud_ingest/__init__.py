"""cloud_ingest."""
