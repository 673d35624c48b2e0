"""scp-ingest: the Storage SCP that receives objects from PACS and modalities."""
