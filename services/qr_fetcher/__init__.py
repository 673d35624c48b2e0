"""The qr-fetcher service."""
