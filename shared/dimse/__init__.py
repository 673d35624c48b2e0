"""Talking to other application entities: associations, query, move/get and store."""
