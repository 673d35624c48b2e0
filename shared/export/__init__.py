"""Sending de-identified patients to the research destination by C-STORE (the exporter).

:class:`Exporter` turns requests into jobs and works their items from the export queue;
:class:`Destination` is the ``EXPORT_*`` settings; the errors are in an operator's words
and hold no PHI.
"""

from shared.export.destination import (
    Destination,
    ExportDisabled,
    ExportError,
    ExportNotConfigured,
    NothingToExport,
)
from shared.export.exporter import Exporter

__all__ = ["Destination", "ExportDisabled", "ExportError", "ExportNotConfigured", "Exporter",
           "NothingToExport"]
