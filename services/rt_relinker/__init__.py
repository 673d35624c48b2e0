"""rt-relinker: keeps the reference graph of de-identified objects and each set's status."""
