"""Running CTP DicomAnonymizer scripts on small objects built in memory.

``run(dataset(...), xml(element("00100020", "@hash(PatientID,8)")))`` compiles the script,
de-identifies the object (allocating ``@integer`` counters 1, 2, ... per key type, as the
PHI index does) and returns the output read back with pydicom.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape, quoteattr

import pydicom
from pydicom.dataset import Dataset

from shared.deid.context import Pseudonyms
from shared.deid.ctp_rules import compile_script
from shared.deid.ctp_script import parse_anonymizer_script
from shared.deid.engine import Engine, NeedsIntegers
from shared.deid.lookup import LookupTable
from tests import synth

SOP_INSTANCE_UID = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
STUDY_INSTANCE_UID = "1.2.826.0.1.3680043.9.7133.2.100"
SERIES_INSTANCE_UID = "1.2.826.0.1.3680043.9.7133.2.101"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PSEUDONYMS = Pseudonyms("ANON-0007", "ANON^0007", 30, "ACC0007")
SECRET = b"s" * 32

Counters = dict[tuple[str, str], int]


def dataset(**values: object) -> Dataset:
    """A CT object with the UIDs every object needs, PatientID 12345, PatientName
    Smith^John^Q and StudyDate 20200315; keyword arguments add or replace elements
    (None deletes one)."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = SOP_INSTANCE_UID
    ds.StudyDate = "20200315"
    ds.Modality = "CT"
    ds.PatientName = "Smith^John^Q"
    ds.PatientID = "12345"
    ds.StudyInstanceUID = STUDY_INSTANCE_UID
    ds.SeriesInstanceUID = SERIES_INSTANCE_UID
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def element(tag: str, script: str, name: str = "", enabled: bool = True) -> str:
    """An ``<e>`` line of an XML script."""
    flag = "T" if enabled else "F"
    return f'<e en="{flag}" t={quoteattr(tag)} n={quoteattr(name)}>{escape(script)}</e>'


def param(name: str, value: str) -> str:
    return f"<p t={quoteattr(name)}>{escape(value)}</p>"


def keep(target: str) -> str:
    return f'<k en="T" t={quoteattr(target)}/>'


def remove(target: str) -> str:
    return f'<r en="T" t={quoteattr(target)}/>'


def xml(*children: str) -> str:
    """An XML script, one child per line from line 2 on."""
    return "<script>\n" + "".join(f"   {child}\n" for child in children) + "</script>\n"


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer)
    return buffer.getvalue()


def engine(
    text: str,
    *,
    lookup: dict[str, str] | LookupTable | None = None,
    dialect: str = "auto",
    site_id: str = "SITE01",
) -> Engine:
    script = parse_anonymizer_script(text, "test.script", dialect)
    table = LookupTable(lookup) if isinstance(lookup, dict) else lookup
    return Engine(compile_script(script, site_id, table), SECRET)


def deidentify(runner: Engine, ds: Dataset, counters: Counters | None = None) -> Dataset:
    """De-identify ``ds``, allocating the counter values the rules ask for."""
    counters = {} if counters is None else counters
    obj = runner.read(to_bytes(ds))
    for _ in range(3):
        try:
            result = runner.deidentify(obj, PSEUDONYMS, counters)
        except NeedsIntegers as needed:
            for key_type, key_value in sorted(needed.keys):
                used = [n for (kind, _), n in counters.items() if kind == key_type]
                counters[(key_type, key_value)] = max(used, default=0) + 1
            continue
        return pydicom.dcmread(io.BytesIO(result.data))
    raise AssertionError("the rules keep asking for new counter values")


def run(
    ds: Dataset,
    text: str,
    *,
    lookup: dict[str, str] | LookupTable | None = None,
    counters: Counters | None = None,
    dialect: str = "auto",
) -> Dataset:
    """Compile ``text`` and de-identify ``ds`` with it."""
    return deidentify(engine(text, lookup=lookup, dialect=dialect), ds, counters)


def only(
    ds: Dataset,
    tag: str,
    script: str,
    *,
    lookup: dict[str, str] | LookupTable | None = None,
    counters: Counters | None = None,
) -> Dataset:
    """Run a script of one element (``tag`` as 8 hex digits) and no other rule."""
    return run(ds, xml(element(tag, script)), lookup=lookup, counters=counters)
