"""The rules and the filter a run uses, from what its operator chose.

Every entry point (``anon deidentify``, the services, ``anon serve``) turns its options,
command-line flags or settings, into rules and a filter here, so that they all refuse the
same bad scripts with the same messages and build the same rule sets.
"""

from __future__ import annotations

from pathlib import Path

from shared.deid.ctp_filter import FilterScript, ObjectFilter
from shared.deid.ctp_rules import compile_script
from shared.deid.ctp_script import load_script
from shared.deid.lookup import LookupTable
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from shared.deid.rules import RuleSet


def load_rules(
    options: ProfileOptions,
    site_id: str,
    script: Path | None = None,
    dialect: str = "auto",
    lookup_table: Path | None = None,
) -> RuleSet:
    """The built-in profile with ``options``, or the CTP anonymizer ``script`` (with its
    ``lookup_table`` for ``@lookup``) compiled for ``site_id``."""
    if script is None:
        return build_profile(options)
    lookup = LookupTable.load(lookup_table) if lookup_table is not None else None
    return compile_script(load_script(script, dialect), site_id, lookup)


def check_script(
    script: Path | None, dialect: str = "auto", lookup_table: Path | None = None
) -> None:
    """Refuse an anonymizer script or lookup table before any work: ``ValueError``
    (``ScriptLoadError``, naming the file and line) or ``OSError``."""
    if script is not None:
        load_script(script, dialect)
    if lookup_table is not None:
        LookupTable.load(lookup_table)


def load_filter(
    filter_script: Path | None = None,
    *,
    reject_structured_reports: bool = True,
    reject_secondary_captures: bool = True,
    reject_identifying_pixels: bool = True,
) -> ObjectFilter:
    """The switches and a CTP DicomFilter script file. Raises ``ValueError`` naming the
    file when the script cannot be parsed, ``OSError`` when it cannot be read."""
    script = None
    if filter_script is not None:
        try:
            script = FilterScript.parse(Path(filter_script).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{filter_script}: {exc}") from None
    return ObjectFilter(
        script=script,
        reject_structured_reports=reject_structured_reports,
        reject_secondary_captures=reject_secondary_captures,
        reject_identifying_pixels=reject_identifying_pixels,
    )
