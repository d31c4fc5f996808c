"""cloud_ingest: MQTT consumer, validation, idempotent storage and before/after evidence reports."""
