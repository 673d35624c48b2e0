"""index-api: the index, status and commands over HTTP, authenticated and audited."""
