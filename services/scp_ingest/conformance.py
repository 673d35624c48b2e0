"""The DICOM Conformance Statement of the Storage SCP, generated from the presentation
contexts the SCP really proposes to accept (``docs/conformance-statement.md``)."""

from __future__ import annotations

from pydicom.uid import UID

from services.scp_ingest.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, storage_contexts


def _name(uid: str) -> str:
    return UID(uid).name if UID(uid).is_valid else uid


def conformance_statement() -> str:
    """The statement as Markdown."""
    contexts = storage_contexts()
    syntaxes = contexts[0][1]
    lines = [
        "# DICOM Conformance Statement: scp-ingest (Storage SCP)",
        "",
        "Generated from the presentation contexts of the running code "
        "(`anon conformance`); a test keeps this file in step with it.",
        "",
        "## Application Entity",
        "",
        "- AE title: `SCP_AE_TITLE` (default `ANONSCP`); port: `SCP_PORT` (default 11112).",
        "- Calling AE titles: any, unless `SCP_ALLOWED_AETS` lists the accepted ones; "
        "hosts: any, unless `SCP_ALLOWED_HOSTS` lists them.",
        "- Associations: up to 32 at once, from any number of peers; "
        "TCP_NODELAY is set on every connection.",
        "- Roles: SCP of the Storage Service Class and of the Verification Service Class. "
        "No SCU role, no extended negotiation.",
        "",
        "## C-STORE status codes",
        "",
        "| Status | Meaning | When |",
        "|---|---|---|",
        f"| {SUCCESS:04X} | Success | the object is stored and its processing is queued |",
        f"| {OUT_OF_RESOURCES:04X} | Refused: Out of Resources | storage or message broker "
        "unavailable; nothing was kept, the sender may retry |",
        f"| {CANNOT_UNDERSTAND:04X} | Error: Cannot Understand | the object is not valid DICOM "
        "(truncated, missing SOP Instance, Study or Series UID...); it is kept in quarantine "
        "with the reason |",
        "",
        f"## Transfer syntaxes ({len(syntaxes)}, accepted for every SOP class)",
        "",
        "Objects are stored in the transfer syntax they arrive in; pixel data is never "
        "decoded.",
        "",
        "| Transfer syntax | UID |",
        "|---|---|",
    ]
    lines += [f"| {_name(ts)} | `{ts}` |" for ts in syntaxes]
    lines += [
        "",
        f"## SOP classes ({len(contexts)})",
        "",
        "| SOP class | UID |",
        "|---|---|",
    ]
    lines += [f"| {_name(uid)} | `{uid}` |" for uid, _ in contexts]
    return "\n".join(lines) + "\n"
