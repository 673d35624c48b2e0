"""The exporter's commands: ``export`` creates an export job and answers its number."""

from __future__ import annotations

from typing import Any

from shared.commands.protocol import EXPORTER, CommandFailed, Registry
from shared.export import Exporter, ExportError
from shared.index import jobs


def export_registry(exporter: Exporter) -> Registry:
    registry = Registry(EXPORTER, (ExportError,))

    async def export(arguments: dict[str, Any]) -> dict[str, Any]:
        patients = arguments.get("patients") or []
        if not isinstance(patients, list) or not all(
                isinstance(p, str) and p.isprintable() and len(p) <= 64 for p in patients):
            raise CommandFailed("patients must be a list of pseudonymous patient IDs",
                                "BadRequest")
        job_id = await exporter.request(
            patients, all_pending=bool(arguments.get("all_pending")),
            force=bool(arguments.get("force")), settle=arguments.get("settle") is not False)
        job = await jobs.get_job(exporter.pool, job_id)
        return {"job": job_id, "items": len(job.items)}

    registry.add("export", export)
    return registry
