"""The export destination and the errors an export request can meet.

The research destination is one Storage SCP named by the ``EXPORT_*`` settings. Every
error here is written for an operator and holds no PHI: it names settings, AE titles,
hosts and ports, never a patient, a study or a value taken from an object.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings


class ExportError(Exception):
    """An export request cannot be carried out; the message is in an operator's words."""


class ExportDisabled(ExportError):
    """Export is switched off by ``EXPORT_ENABLED=false``."""


class ExportNotConfigured(ExportError):
    """No destination is configured (``EXPORT_HOST`` is unset)."""


class NothingToExport(ExportError):
    """Every patient was asked for, and every one is exported already."""


@dataclass(frozen=True)
class Destination:
    """Where de-identified objects go, and how we call it."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Destination | None:
        """The destination of the settings, or None while ``EXPORT_HOST`` is unset."""
        if not settings.export_host:
            return None
        return cls(settings.export_host, settings.export_port, settings.export_called_ae,
                   settings.export_calling_ae, settings.export_timeout_seconds)

    def describe(self) -> str:
        """``AE@host:port``: how statuses and messages name the destination."""
        return f"{self.called_ae}@{self.host}:{self.port}"


def destination_or_refuse(settings: Settings) -> Destination:
    """The configured destination; ExportDisabled when export is switched off,
    ExportNotConfigured when no host is set (checked in this order)."""
    if not settings.export_enabled:
        raise ExportDisabled("export is switched off (EXPORT_ENABLED=false)")
    destination = Destination.from_settings(settings)
    if destination is None:
        raise ExportNotConfigured(
            "no export destination: set EXPORT_HOST (and EXPORT_PORT, EXPORT_CALLED_AE)")
    return destination
