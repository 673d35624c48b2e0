"""The DICOM Conformance Statement of the Storage SCP, generated from the presentation
contexts the SCP really proposes to accept (``docs/conformance-statement.md``)."""

from __future__ import annotations

from pydicom.uid import UID

from services.scp_ingest.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, storage_contexts
from shared.config import Settings


def _name(uid: str) -> str:
    return UID(uid).name if UID(uid).is_valid else uid


def _default(name: str) -> object:
    value = Settings.model_fields[name].default
    return f"{value:g}" if isinstance(value, float) else value


# (setting, what it bounds) of the association and of each C-STORE
LIMITS = [
    ("scp_max_associations", "associations open at once; one more is rejected "
     "(A-ASSOCIATE-RJ, transient, local limit exceeded), further connections are closed"),
    ("scp_max_pdu_size", "bytes: Maximum Length Received in the A-ASSOCIATE-AC "
     "(0: no limit); a peer sending a longer P-DATA PDU is cut off before it is read"),
    ("scp_acse_timeout", "seconds: waiting for the A-ASSOCIATE-RQ after the connection "
     "opens, and for the release (ARTIM timer)"),
    ("scp_dimse_timeout", "seconds: waiting for a DIMSE message the SCP expects"),
    ("scp_network_timeout", "seconds: an association idle this long is aborted"),
    ("scp_store_timeout", "seconds: a C-STORE waits this long for its object to be made "
     "durable in the journal, then answers A700 and keeps nothing of it"),
    ("scp_journal_min_free_bytes", "bytes: free space the journal's volume keeps; below "
     "it, and when the volume fills during a write, C-STOREs are answered A700 and "
     "nothing of the object is kept"),
    ("scp_processes", "receiver processes accepting on the one port (the one holding "
     "fewest connections first); `SCP_MAX_ASSOCIATIONS` holds for them together"),
    ("max_object_bytes", "bytes: the largest object accepted; a larger one is refused "
     "unread (C000); one growing beyond it by more than 1 % and 1 MiB while it is received "
     "is cut off (the association is aborted) and nothing of it is kept"),
]


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
        "- Calling AE titles: any, unless `SCP_ALLOWED_AETS` lists the accepted ones "
        "(others: A-ASSOCIATE-RJ, permanent, calling AE title not recognized).",
        "- Hosts: any, unless `SCP_ALLOWED_HOSTS` lists the accepted addresses or "
        "networks; the connection of any other host is closed before a PDU is read or "
        "answered.",
        f"- Associations: up to `SCP_MAX_ASSOCIATIONS` (default "
        f"{_default('scp_max_associations')}) at once, from any number of peers; "
        "TCP_NODELAY is set on every connection.",
        "- Roles: SCP of the Storage Service Class and of the Verification Service Class. "
        "No SCU role, no extended negotiation.",
        "",
        "## C-STORE status codes",
        "",
        "| Status | Meaning | When |",
        "|---|---|---|",
        f"| {SUCCESS:04X} | Success | the object is durable: written and flushed to the disk "
        "in the SCP's journal (`SCP_SPOOL_DIR`), from which it is stored and queued for "
        "de-identification; it survives a crash of any process |",
        f"| {OUT_OF_RESOURCES:04X} | Refused: Out of Resources | the journal's volume is full "
        "or below `SCP_JOURNAL_MIN_FREE_BYTES`, the journal failed, or the SCP is stopping; "
        "nothing was kept, the sender may retry |",
        f"| {CANNOT_UNDERSTAND:04X} | Error: Cannot Understand | the object is refused: not "
        "valid DICOM (truncated, missing SOP Instance, Study or Series UID...), beyond a "
        "limit of the reader (size, inflated size, nesting depth) or larger than "
        "`MAX_OBJECT_BYTES`; it is kept in quarantine with the reason, and sending it "
        "again gets the same answer |",
        "",
        "## Limits and timeouts",
        "",
        "| Setting | Default | Bounds |",
        "|---|---|---|",
        *[f"| `{name.upper()}` | {_default(name)} | {what} |" for name, what in LIMITS],
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
