"""The whole system in one process on embedded defaults (``anon serve``)."""
