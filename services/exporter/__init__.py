"""The exporter service."""
