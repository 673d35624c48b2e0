"""What can go wrong with the PHI index, importable without a database driver."""


class DatabaseUnavailable(Exception):
    """The PHI index database cannot be reached or started."""


class SiteConflict(Exception):
    """The configured SITEID differs from the one fixed at first start."""
