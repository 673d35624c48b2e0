"""Configuration an administrator changes while the system runs: the anonymizer script, the
filter script and the export switch, kept in the index.

The settings (``SCRIPT_PATH``, ``FILTER_PATH``, ``EXPORT_ENABLED``) say what a deployment
starts with. A document saved here takes the place of the settings' choice for every
service sharing the index, until it is replaced again or reset; the ``ACCEPT_*`` switches
and ``LOOKUP_TABLE`` stay with the settings. A document goes through the same parsers as
the settings' files before it is saved, so no service ever meets a stored document it
cannot use, and the error gives the parsers' line and reason. Those reasons can quote the
document, and a filter may compare with a patient's ID: any quoted text of the document
that is not a DICOM keyword, a tag or a word of the script languages is left out of the
error.

Every change adds a row (migration 0010), so the history says what was in force when, and
the version of a change is higher than that of every change committed before it. A
running service compares :func:`configuration_version` (one indexed ``max``) with the
version its rules were built from at most every :data:`CONFIG_REFRESH_SECONDS`
(:mod:`shared.deid.live`); the exporter reads the export switch as often.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
from pydicom.datadict import keyword_dict

from shared.config import Settings
from shared.deid.configured import load_filter, load_rules
from shared.deid.ctp_filter import FilterScript, FilterSyntaxError, ObjectFilter
from shared.deid.ctp_filter_methods import METHODS
from shared.deid.ctp_language import BARE_OPERATIONS, FUNCTIONS, TOKENS, UNSUPPORTED
from shared.deid.ctp_rules import compile_script
from shared.deid.ctp_script import REMOVAL_SWITCHES, ScriptLoadError, parse_anonymizer_script
from shared.deid.lookup import LookupTable
from shared.deid.profile import build_profile, profile_sha256
from shared.deid.rules import RuleSet

CONFIG_REFRESH_SECONDS = 5.0
"""Longest a running service goes without checking whether the configuration changed."""

SCRIPT = "script"
FILTER = "filter"
KINDS = (SCRIPT, FILTER)

INDEX = "index"
FILE = "file"
BUILT_IN = "built-in"

EXPORT_ENABLED = "export_enabled"
"""The :class:`RuntimeSetting` switching export on (true) and off (false)."""

MAX_DOCUMENT_CHARS = 1_000_000
_LOCK_KEY = 0x5EED_C0_F1  # advisory lock of configuration changes (migrations use another)
_CHECK_SITE_ID = "000000"  # compiling a script to check it; the SITEID changes nothing there
_LEFT_OUT = "(text left out)"


class InvalidDocument(ValueError):
    """A script or filter that cannot be used: ``line`` (from 1, None when the problem is
    not on one line) and ``reason``, which quotes no text of the document but names."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ActiveDocument:
    """The script or filter in force. ``source`` is ``index`` (saved here), ``file`` (the
    settings' file) or ``built-in`` (the PS3.15 profile, or no filter script; ``text`` is
    None). ``version`` is that of the last change of this kind in the index (0: never
    changed), with who made it and when; after a reset the source is the settings' again.
    ``options``: the built-in profile's options (script), or the filter's switches in
    force whatever the source (filter)."""

    kind: str
    source: str
    text: str | None
    dialect: str | None
    sha256: str | None
    version: int
    changed_at: datetime | None
    changed_by: str | None
    name: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One change of the history: a document saved (``source`` ``index``) or a reset to
    the settings' choice (``settings``, no text), in force from ``changed_at`` until
    ``replaced_at`` (None: still in force)."""

    kind: str
    version: int
    source: str
    text: str | None
    dialect: str | None
    sha256: str | None
    changed_at: datetime
    changed_by: str
    replaced_at: datetime | None


@dataclass(frozen=True, slots=True)
class RuntimeSetting:
    name: str
    value: Any
    changed_at: datetime
    changed_by: str


# -- checking a document ---------------------------------------------------------------


def check_document(kind: str, text: str, dialect: str = "auto") -> str | None:
    """Refuse a document no service could use (:class:`InvalidDocument`); for a script,
    the dialect it is read with (``ctp`` or ``rsna``), for a filter None."""
    _check_kind(kind)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidDocument(None, f"longer than {MAX_DOCUMENT_CHARS:,} characters")
    if "\x00" in text:
        raise InvalidDocument(text.count("\n", 0, text.index("\x00")) + 1, "a NUL character")
    if kind == FILTER:
        try:
            FilterScript.parse(text)
        except FilterSyntaxError as exc:
            reason = f"{_scrub(exc.reason, text)} (column {exc.column})"
            raise InvalidDocument(exc.line, reason) from None
        return None
    if dialect not in ("auto", "ctp", "rsna"):
        raise InvalidDocument(None, "the script dialect is auto, ctp or rsna")
    if not text.strip():
        raise InvalidDocument(None, "the script is empty")
    try:
        script = parse_anonymizer_script(text, "script", dialect)
        compile_script(script, _CHECK_SITE_ID)
    except ScriptLoadError as exc:
        raise _script_error(str(exc), text) from None
    except (ValueError, KeyError) as exc:
        raise InvalidDocument(None, f"the script cannot be compiled ({type(exc).__name__})"
                              ) from None
    if (script.dialect == "ctp" and not any(e.enabled for e in script.entries)
            and "unspecifiedelements" not in script.remove):
        # CTP keeps every element no script names: this would de-identify nothing.
        raise InvalidDocument(None, "no enabled element script, and unspecified elements "
                              "are kept: nothing would be de-identified")
    return script.dialect


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r} (script or filter)")


_SCRIPT_ERROR = re.compile(
    r"script(?:, line (?P<line>\d+))?(?: \((?P<element>[^\n]*?)\)(?=[,:]))?(?P<rest>.*)",
    re.DOTALL)


def _script_error(message: str, text: str) -> InvalidDocument:
    """:class:`InvalidDocument` from a ``ScriptLoadError`` message (``script, line N
    (Element), character C of the script: reason`` and its shorter forms)."""
    match = _SCRIPT_ERROR.fullmatch(message)
    if match is None:  # not a form we know: keep nothing of it but that it failed
        return InvalidDocument(None, "the script cannot be read")
    line = int(match["line"]) if match["line"] else None
    rest = match["rest"].lstrip(",: ")
    column = re.fullmatch(r"column (\d+): (.*)", rest, re.DOTALL)
    if column:
        rest = f"{column[2]} (column {column[1]})"
    element = match["element"]
    if element and _is_name(element.strip()):
        rest = f"{element.strip()}, {rest}"
    return InvalidDocument(line or None, _scrub(rest, text))


_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
_UNKNOWN_FUNCTION = re.compile(r"unknown function @[A-Za-z]+")
# Eight bare digits could be a patient's ID: only tags written with a comma count.
_TAG = re.compile(r"\(?[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)?|group[0-9A-Fa-f]{4}")
_WORDS = frozenset({
    *keyword_dict, *METHODS, *FUNCTIONS, *TOKENS, *BARE_OPERATIONS, *UNSUPPORTED,
    *REMOVAL_SWITCHES, "true", "false", "this", "safeprivateelements",
})


def _is_name(fragment: str) -> bool:
    """A DICOM keyword, a tag or a word of the script languages (never PHI)."""
    return fragment in _WORDS or _TAG.fullmatch(fragment) is not None


def _scrub(reason: str, text: str) -> str:
    """``reason`` without any quoted text taken from the document that is not a name."""

    def keep_or_leave_out(match: re.Match[str]) -> str:
        fragment = match[1] if match[1] is not None else match[2]
        if (not any(c.isalnum() for c in fragment) or _is_name(fragment.strip())
                or fragment not in text):
            return match[0]
        return _LEFT_OUT

    reason = _UNKNOWN_FUNCTION.sub(f"unknown function {_LEFT_OUT}", reason)
    return _QUOTED.sub(keep_or_leave_out, reason)


# -- what is in force -------------------------------------------------------------------


async def configuration_version(executor: asyncpg.Pool | asyncpg.Connection) -> int:
    """The version of the latest change of any document (0: none); it only grows."""
    value: int = await executor.fetchval(
        "SELECT coalesce(max(version), 0) FROM config_document")
    return value


async def _latest(
    executor: asyncpg.Pool | asyncpg.Connection, kind: str
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "SELECT version, text, dialect, sha256, changed_at, changed_by FROM config_document"
        " WHERE kind = $1 ORDER BY version DESC LIMIT 1", kind)


def _stored(kind: str, row: asyncpg.Record) -> ActiveDocument:
    return ActiveDocument(kind, INDEX, row["text"], row["dialect"], row["sha256"],
                          row["version"], row["changed_at"], row["changed_by"])


def _change(row: asyncpg.Record | None) -> tuple[int, datetime | None, str | None]:
    if row is None:
        return 0, None, None
    return row["version"], row["changed_at"], row["changed_by"]


async def active_script(pool: asyncpg.Pool | asyncpg.Connection, settings: Settings
                        ) -> ActiveDocument:
    """The anonymizer script in force: the one saved in the index, else the settings'
    ``SCRIPT_PATH`` (its text), else the built-in profile with ``PROFILE_OPTIONS``."""
    row = await _latest(pool, SCRIPT)
    if row is not None and row["text"] is not None:
        return _stored(SCRIPT, row)
    change = _change(row)
    if settings.script_path is None:
        options = settings.options
        return ActiveDocument(SCRIPT, BUILT_IN, None, None, profile_sha256(options), *change,
                              name=build_profile(options).name,
                              options=tuple(options.selected()))
    data = settings.script_path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    dialect = settings.script_dialect
    if dialect == "auto":
        # A file that cannot be read: the services refuse it when they start.
        with contextlib.suppress(ValueError):
            dialect = parse_anonymizer_script(text, "script").dialect
    return ActiveDocument(SCRIPT, FILE, text, dialect, hashlib.sha256(data).hexdigest(),
                          *change, name=settings.script_path.name)


def filter_switches(settings: Settings) -> dict[str, bool]:
    """The switches of the filter (``ACCEPT_*``), whatever its script."""
    return {"reject_structured_reports": not settings.accept_structured_reports,
            "reject_secondary_captures": not settings.accept_secondary_captures,
            "reject_identifying_pixels": not settings.accept_burned_in_annotation}


async def active_filter(pool: asyncpg.Pool | asyncpg.Connection, settings: Settings
                        ) -> ActiveDocument:
    """The filter script in force: the one saved in the index, else the settings'
    ``FILTER_PATH``, else none (``built-in``: only the switches); ``options`` names the
    switches that are on."""
    row = await _latest(pool, FILTER)
    switches = tuple(name for name, on in filter_switches(settings).items() if on)
    if row is not None and row["text"] is not None:
        return replace(_stored(FILTER, row), options=switches)
    change = _change(row)
    if settings.filter_path is None:
        return ActiveDocument(FILTER, BUILT_IN, None, None, None, *change, options=switches)
    data = settings.filter_path.read_bytes()
    return ActiveDocument(FILTER, FILE, data.decode("utf-8", errors="replace"), None,
                          hashlib.sha256(data).hexdigest(), *change,
                          name=settings.filter_path.name, options=switches)


def rules_of(document: ActiveDocument | None, settings: Settings, site_id: str) -> RuleSet:
    """The rules of an active script, or of the settings (None). A stored script is named
    ``CTP script index-v<version>`` in the instances it de-identifies, with the SHA-256 of
    its text."""
    if document is None or document.source != INDEX:
        return load_rules(settings.options, site_id, settings.script_path,
                          settings.script_dialect, settings.lookup_table)
    assert document.text is not None
    lookup = LookupTable.load(settings.lookup_table) if settings.lookup_table else None
    script = parse_anonymizer_script(document.text, f"index-v{document.version}",
                                     document.dialect or "auto", document.sha256)
    return compile_script(script, site_id, lookup)


def filter_of(document: ActiveDocument | None, settings: Settings) -> ObjectFilter:
    """The object filter of an active filter document, or of the settings (None), with the
    settings' switches."""
    if document is None or document.source != INDEX:
        return load_filter(settings.filter_path, **filter_switches(settings))
    assert document.text is not None
    return replace(load_filter(None, **filter_switches(settings)),
                   script=FilterScript.parse(document.text))


# -- changing documents -----------------------------------------------------------------


async def _next_version(connection: asyncpg.Connection) -> int:
    """Inside a transaction: take the lock of changes (held to its end), then the next
    version, so that versions grow in the order changes are committed."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
    value: int = await connection.fetchval(
        "SELECT coalesce(max(version), 0) + 1 FROM config_document")
    return value


def _check_changer(changed_by: str) -> None:
    if not changed_by.strip():
        raise ValueError("changed_by must name who makes the change")


async def replace_document(
    connection: asyncpg.Connection, kind: str, text: str, changed_by: str,
    dialect: str = "auto",
) -> ActiveDocument:
    """Check ``text`` (:class:`InvalidDocument`, nothing saved) and save it as the
    ``kind`` document in force for every service, within a few seconds. On the caller's
    connection, in its transaction if one is open (for its audit record)."""
    resolved = check_document(kind, text, dialect)
    _check_changer(changed_by)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    async with connection.transaction():
        version = await _next_version(connection)
        changed_at = await connection.fetchval(
            "INSERT INTO config_document (version, kind, text, dialect, sha256, changed_by)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING changed_at",
            version, kind, text, resolved, sha256, changed_by)
    return ActiveDocument(kind, INDEX, text, resolved, sha256, version, changed_at, changed_by)


async def reset_document(connection: asyncpg.Connection, kind: str, changed_by: str) -> int:
    """Put the settings' choice back in force for ``kind`` (a change of its own, in the
    history); the version of the change."""
    _check_kind(kind)
    _check_changer(changed_by)
    async with connection.transaction():
        version = await _next_version(connection)
        await connection.execute(
            "INSERT INTO config_document (version, kind, changed_by) VALUES ($1, $2, $3)",
            version, kind, changed_by)
    return version


async def document_history(
    pool: asyncpg.Pool | asyncpg.Connection, kind: str, limit: int = 50
) -> list[DocumentVersion]:
    """The latest ``limit`` changes of ``kind``, newest first."""
    _check_kind(kind)
    rows = await pool.fetch(
        "SELECT * FROM (SELECT version, text, dialect, sha256, changed_at, changed_by,"
        " lead(changed_at) OVER (ORDER BY version) AS replaced_at"
        " FROM config_document WHERE kind = $1) AS h ORDER BY version DESC LIMIT $2",
        kind, limit)
    return [DocumentVersion(kind, r["version"], INDEX if r["text"] is not None else "settings",
                            r["text"], r["dialect"], r["sha256"], r["changed_at"],
                            r["changed_by"], r["replaced_at"]) for r in rows]


# -- switches ---------------------------------------------------------------------------


async def runtime_setting(
    executor: asyncpg.Pool | asyncpg.Connection, name: str
) -> RuntimeSetting | None:
    """The switch ``name`` as last changed, None if it never was (the settings decide)."""
    row = await executor.fetchrow(
        "SELECT value, changed_at, changed_by FROM runtime_setting WHERE name = $1", name)
    if row is None:
        return None
    return RuntimeSetting(name, json.loads(row["value"]), row["changed_at"], row["changed_by"])


async def export_enabled(pool: asyncpg.Pool | asyncpg.Connection, default: bool) -> bool:
    """Whether export is switched on; ``default`` (``EXPORT_ENABLED``) if never switched."""
    setting = await runtime_setting(pool, EXPORT_ENABLED)
    return default if setting is None else setting.value is True


async def set_export_enabled(
    connection: asyncpg.Connection, enabled: bool, changed_by: str
) -> None:
    """Switch export on or off for every exporter, within a few seconds."""
    _check_changer(changed_by)
    await connection.execute(
        "INSERT INTO runtime_setting (name, value, changed_by) VALUES ($1, $2::jsonb, $3)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
        " changed_at = clock_timestamp(), changed_by = excluded.changed_by",
        EXPORT_ENABLED, json.dumps(bool(enabled)), changed_by)
