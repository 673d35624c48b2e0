"""anonymizer-worker: de-identifies received objects from the anonymize queue."""
