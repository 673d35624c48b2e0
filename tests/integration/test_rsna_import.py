"""``anon index import-rsna``: a site's RSNA Anonymizer index moved into the PHI index, so
that new objects of its patients and studies get the pseudonyms the Anonymizer gave them.

The workbooks are built as the Anonymizer's Index tab saves them: one row per study, the
columns of its index, SITEID-NNNNNN patient IDs, its UID root, and the dates Excel leaves
(text, numbers, date cells). Their PHI is the planted PHI of ``tests/synth.py``, so the
objects de-identified afterwards are of the same patients and studies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import openpyxl
import pydicom
import pytest
from pydicom.dataset import Dataset

from services.cli.main import main
from shared.dicom.uids import UidMapper
from shared.index.migrations import migrate
from shared.index.phi_index import Site
from shared.index.workbook import RSNA_COLUMNS, study_rows, write_workbook
from tests import synth
from tests.helpers import deidentify, outputs, read, site_secret

pytestmark = pytest.mark.integration

SITE = "883546"
ROOT = "1.2.826.0.1.3680043.10.474"  # the Anonymizer's UID root
A, B = synth.phi_for(0), synth.phi_for(1)
# Patient A: the RT study (new objects of it follow) and an older CT study; patient B: one
# study. Offsets as the Anonymizer's index holds them: ANON = PHI + DateOffset.
STUDY_A1 = str(synth.uid_for("rt-study", 0))
STUDY_A2 = "1.2.840.113619.2.55.3.604688119.868.1453986112.77"
STUDY_B1 = "1.2.840.113619.2.55.3.604688119.868.1565612345.12"
OFFSET_A, OFFSET_B = -1234, -2001


def _shifted(day: str, offset: int) -> str:
    return f"{datetime.strptime(day, '%Y%m%d').date() + timedelta(days=offset):%Y%m%d}"


def _rows(offset_sign: int = 1) -> list[list[object]]:
    """The three studies, each row with values in the forms Excel leaves them. With
    ``offset_sign`` -1 DateOffset has the opposite sign (ANON = PHI - DateOffset)."""
    a_old, b_day = "20160105", "20190812"
    return [
        [f"{SITE}-000001", f"{SITE}-000001", A.patient_name, A.patient_id,
         OFFSET_A * offset_sign, _shifted(A.study_date, OFFSET_A), A.study_date, "1",
         A.accession_number, f"{ROOT}.{SITE}.1", STUDY_A1],
        # Excel made a number of the PHI date, a date cell of the ANON date, a number of
        # the accession, and the offset is text.
        [f"{SITE}-000001", f"{SITE}-000001", A.patient_name, A.patient_id,
         str(OFFSET_A * offset_sign),
         datetime.strptime(_shifted(a_old, OFFSET_A), "%Y%m%d"), int(a_old), 2,
         "ACC20160105", f"{ROOT}.{SITE}.2", STUDY_A2],
        [f"{SITE}-000007", f"{SITE}-000007", B.patient_name, B.patient_id,
         float(OFFSET_B * offset_sign), _shifted(b_day, OFFSET_B), f"{b_day[:4]}-{b_day[4:6]}-"
         f"{b_day[6:]}", "3", B.accession_number, f"{ROOT}.{SITE}.3", STUDY_B1],
    ]


def _workbook(path: Path, rows: list[list[object]], columns: tuple[str, ...] = RSNA_COLUMNS,
              header_row: int = 1) -> Path:
    """A workbook as the Index tab saves it; ``header_row`` > 1 puts a title above the
    header, and the columns may come with others among them."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Patient Index"
    for _ in range(header_row - 1):
        sheet.append(["Patient Index List"])
    sheet.append(list(columns))
    for row in rows:
        if columns != RSNA_COLUMNS:
            by_name = dict(zip(RSNA_COLUMNS, row, strict=True))
            row = [by_name.get(name, "ignored") for name in columns]
        sheet.append(row)
    workbook.save(path)
    return path


def _import(path: Path, data: Path, *extra: str) -> int:
    return main(["index", "import-rsna", str(path), "--data-dir", str(data), *extra])


def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _migrated(url: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection)
        finally:
            await connection.close()

    asyncio.run(run())


def _state(url: str) -> tuple[object, ...]:
    """Everything an import may change."""
    return (
        _fetch(url, "SELECT site_id FROM site"),
        _fetch(url, "SELECT original_patient_id, original_issuer, pseudo_patient_id,"
               " pseudo_patient_name, date_offset_days FROM patient ORDER BY id"),
        _fetch(url, "SELECT original_study_uid, pseudo_study_uid, pseudo_accession, imported"
               " FROM study ORDER BY id"),
        _fetch(url, "SELECT key_type, key_value, value FROM integer_value ORDER BY 1, 2"),
        _fetch(url, "SELECT key_type, last_value FROM integer_key_type ORDER BY 1"),
    )


def _mappings(url: str) -> tuple[dict[str, tuple[object, ...]], dict[str, tuple[object, ...]]]:
    """Patients by original ID and studies by original UID, with their pseudonyms."""
    patients = {r[0]: tuple(r)[1:] for r in _fetch(
        url, "SELECT original_patient_id, pseudo_patient_id, pseudo_patient_name,"
        " date_offset_days FROM patient")}
    studies = {r[0]: tuple(r)[1:] for r in _fetch(
        url, "SELECT s.original_study_uid, s.pseudo_study_uid, s.pseudo_accession,"
        " s.pseudo_study_date, p.pseudo_patient_id FROM study s JOIN patient p"
        " ON p.id = s.patient")}
    return patients, studies


def _write(datasets: list[Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n, ds in enumerate(datasets):
        synth.write(ds, folder / f"{n}.dcm")
    return folder


def _phi_values(*phis: synth.PHIValues) -> list[str]:
    return [v for phi in phis for v in (phi.patient_id, phi.patient_name,
                                        phi.accession_number, phi.study_date)]


@pytest.fixture
def other_database(admin_url: str) -> Iterator[str]:
    """A second fresh database, for a second index."""
    name = f"anon_test_{uuid.uuid4().hex[:12]}"
    _fetch(admin_url, f'CREATE DATABASE "{name}"')
    base, _, query = admin_url.partition("?")
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    finally:
        _fetch(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_new_objects_of_imported_patients_and_studies_keep_their_pseudonyms(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The header below a title row, other columns among the Anonymizer's, blank rows.
    columns = ("Notes", *RSNA_COLUMNS[:5], "Modality", *RSNA_COLUMNS[5:])
    rows = _rows()
    path = _workbook(tmp_path / "Index.xlsx", [rows[0], [None] * 11, *rows[1:]], columns,
                     header_row=3)
    data = tmp_path / "data"
    assert _import(path, data) == 0
    printed = capsys.readouterr().out
    assert "patients:    2 imported, 0 already present, 0 conflicts" in printed
    assert "studies:     3 imported, 0 already present, 0 conflicts" in printed
    assert f"SITEID:      {SITE}" in printed
    assert "ANON-StudyDate = PHI-StudyDate + DateOffset (shown by 3 rows)" in printed
    assert f"next new patient: {SITE}-000008" in printed
    assert not [v for v in _phi_values(A, B) if v in printed]

    # A new RT set of patient A's first study, a new CT study of patient A, a new patient.
    rt = synth.make_rt_set(n_ct=3, n_rois=2, n_beams=1, patient_index=0)
    known_study = _write(rt.all(), tmp_path / "in" / "known-study")
    new_study = _write(synth.make_ct_series(2, patient_index=0), tmp_path / "in" / "new-study")
    new_patient = _write(synth.make_ct_series(2, patient_index=2),
                         tmp_path / "in" / "new-patient")
    out = tmp_path / "out"
    assert deidentify([known_study, new_study, new_patient], out, data) == 0
    written = [read(p) for p in outputs(out)]
    by_study: dict[str, list[Dataset]] = {}
    for ds in written:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)

    # Patient A's known study: its pseudonymous ID, name and offset, the study's UID and
    # accession number from the Anonymizer, in every object and in the structure set's
    # reference to the study.
    known = by_study.pop(f"{ROOT}.{SITE}.1")
    assert len(known) == len(rt.all())
    for ds in known:
        assert (ds.PatientID, str(ds.PatientName)) == (f"{SITE}-000001", f"{SITE}-000001")
        assert ds.AccessionNumber == "1"
        assert ds.StudyDate == _shifted(A.study_date, OFFSET_A)
    [structure_set] = [ds for ds in known if ds.Modality == "RTSTRUCT"]
    [frame] = structure_set.ReferencedFrameOfReferenceSequence
    assert frame.RTReferencedStudySequence[0].ReferencedSOPInstanceUID == f"{ROOT}.{SITE}.1"
    assert {ds.SeriesInstanceUID for ds in known}.isdisjoint(
        {str(d.SeriesInstanceUID) for d in rt.all()})  # series stay keyed

    # Patient A's new study: the patient's pseudonyms and offset, the study's keyed UID and
    # accession number.
    secret = site_secret(index_env)
    [ct] = synth.make_ct_series(1, patient_index=0)
    keyed = by_study.pop(UidMapper(secret)(str(ct.StudyInstanceUID)))
    assert {ds.PatientID for ds in keyed} == {f"{SITE}-000001"}
    assert {ds.StudyDate for ds in keyed} == {_shifted(A.study_date, OFFSET_A)}
    accession = Site(SITE, secret).accession_pseudonym(str(ct.StudyInstanceUID),
                                                       A.accession_number)
    assert {ds.AccessionNumber for ds in keyed} == {accession}

    # The new patient: the number after the highest imported one.
    [(_, others)] = by_study.items()
    assert {ds.PatientID for ds in others} == {f"{SITE}-000008"}

    # The index still holds the imported study as imported, and the new ones as keyed.
    patients, studies = _mappings(index_env)
    assert patients[A.patient_id] == (f"{SITE}-000001", f"{SITE}-000001", 1234)
    assert patients[B.patient_id] == (f"{SITE}-000007", f"{SITE}-000007", 2001)
    assert studies[STUDY_A1][:2] == (f"{ROOT}.{SITE}.1", "1")
    assert studies[str(ct.StudyInstanceUID)][:2] == (
        UidMapper(secret)(str(ct.StudyInstanceUID)), accession)


def test_offsets_of_either_sign_convention_give_the_same_offsets(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _workbook(tmp_path / "Index.xlsx", _rows(offset_sign=-1))
    assert _import(path, tmp_path / "data") == 0
    assert "ANON-StudyDate = PHI-StudyDate - DateOffset (shown by 3 rows)" in (
        capsys.readouterr().out)
    patients, _ = _mappings(index_env)
    assert patients[A.patient_id][2] == 1234 and patients[B.patient_id][2] == 2001


def test_rows_whose_dates_show_both_conventions_are_refused(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows()
    rows[2][4] = -OFFSET_B  # B's dates now say ANON = PHI - DateOffset
    path = _workbook(tmp_path / "Index.xlsx", rows)
    assert _import(path, tmp_path / "data") == 1
    error = capsys.readouterr().err
    assert "row 4 against 2 rows such as row 2" in error
    assert _fetch(index_env, "SELECT * FROM patient") == []


def test_dates_kept_or_changed_otherwise_are_imported_as_written(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows()
    rows[0][5] = A.study_date  # the date was kept
    path = _workbook(tmp_path / "Index.xlsx", rows)
    assert _import(path, tmp_path / "data") == 0
    printed = capsys.readouterr().out
    assert "(shown by 2 rows)" in printed
    assert "1 rows have study dates that differ by neither" in printed
    _, studies = _mappings(index_env)
    assert studies[STUDY_A1][2] == A.study_date


def test_a_workbook_of_another_site_than_the_index_is_refused_and_nothing_changes(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("SITE_ID", "111111")
    assert deidentify([_write(synth.make_ct_series(1, patient_index=3), tmp_path / "in")],
                      tmp_path / "out", data) == 0
    before = _state(index_env)
    path = _workbook(tmp_path / "Index.xlsx", _rows())
    capsys.readouterr()
    assert _import(path, data) == 1
    assert f"SITEID is {SITE} but SITE_ID is 111111" in capsys.readouterr().err
    monkeypatch.delenv("SITE_ID")
    assert _import(path, data) == 1
    assert f"SITEID is {SITE} but this index is of site 111111" in capsys.readouterr().err
    assert _import(path, data, "--dry-run") == 1
    assert _state(index_env) == before


def test_importing_again_changes_nothing_and_a_dry_run_nothing_at_all(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    path = _workbook(tmp_path / "Index.xlsx", _rows())
    _migrated(index_env)
    empty = _state(index_env)
    assert _import(path, data, "--dry-run") == 0
    assert "patients:    2 imported" in capsys.readouterr().out
    assert _state(index_env) == empty

    assert _import(path, data) == 0
    imported = _state(index_env)
    assert _import(path, data) == 0
    printed = capsys.readouterr().out
    assert "patients:    0 imported, 2 already present, 0 conflicts" in printed
    assert "studies:     0 imported, 3 already present, 0 conflicts" in printed
    assert _state(index_env) == imported

    # A later workbook with one more study of a known patient adds just that study.
    later = [*_rows(), [f"{SITE}-000007", f"{SITE}-000007", B.patient_name, B.patient_id,
                        OFFSET_B, "20180101", _shifted("20180101", -OFFSET_B), "4", "",
                        f"{ROOT}.{SITE}.4", "1.2.840.113619.2.55.3.9.4"]]
    assert _import(_workbook(tmp_path / "Later.xlsx", later), data) == 0
    printed = capsys.readouterr().out
    assert "patients:    0 imported, 2 already present" in printed
    assert "studies:     1 imported, 3 already present" in printed


def test_a_workbook_that_disagrees_with_the_index_is_refused_by_row(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert _import(_workbook(tmp_path / "Index.xlsx", _rows()), data) == 0
    imported = _state(index_env)
    rows = _rows()
    rows[2][0] = rows[2][1] = f"{SITE}-000009"  # patient B under another pseudonym
    rows[1][9] = f"{ROOT}.{SITE}.99"  # a study under another UID
    capsys.readouterr()
    assert _import(_workbook(tmp_path / "Other.xlsx", rows), data) == 1
    printed = capsys.readouterr().out
    assert "patients:    0 imported, 1 already present, 1 conflicts" in printed
    assert "studies:     0 imported, 2 already present, 1 conflicts" in printed
    assert "conflict:    row 4: the index holds this patient (PHI-PatientID)" in printed
    assert "conflict:    row 4: the index's patient counter gives this patient" in printed
    assert "conflict:    row 3: the index holds this study" in printed
    assert not [v for v in _phi_values(A, B) if v in printed]
    assert _state(index_env) == imported


@pytest.mark.parametrize(("change", "expected"), [
    ("no accession column", "sheet 'Patient Index' row 1 has the RSNA Anonymizer's columns "
                            "but not PHI-Accession"),
    ("five-digit SITEID", "row 3: ANON-PatientID is not SITEID-NNNNNN"),
    ("two SITEIDs", "row 4: ANON-PatientID has the SITEID 111111, not 883546 as row 2"),
    ("no offset", "row 2: DateOffset is empty"),
    ("no date", "row 3: PHI-StudyDate is not a date"),
    ("huge offset", "row 2: DateOffset is more than 36500 days"),
    ("two pseudonyms", "row 3: PHI-PatientID is the one of row 2 with another ANON-PatientID"),
    ("no PHI", "row 2: PHI-PatientID and PHI-StudyInstanceUID are both empty"),
    ("not xlsx", "must be an .xlsx workbook"),
])
def test_a_malformed_workbook_is_refused_with_the_reason(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str], change: str,
    expected: str,
) -> None:
    rows = _rows()
    columns = RSNA_COLUMNS
    if change == "no accession column":
        columns = tuple(c for c in RSNA_COLUMNS if c != "PHI-Accession")
    elif change == "five-digit SITEID":
        rows[1][1] = "88354-000001"
    elif change == "two SITEIDs":
        rows[2][1] = "111111-000007"
    elif change == "no offset":
        rows[0][4] = None
    elif change == "huge offset":
        rows[0][4] = 10**12
    elif change == "no date":
        rows[1][6] = "5 janvier"
    elif change == "two pseudonyms":
        rows[1][1] = f"{SITE}-000002"
    elif change == "no PHI":
        for row in rows:
            row[2] = row[3] = row[4] = row[6] = row[8] = row[10] = None
    path = _workbook(tmp_path / "Index.xlsx", rows, columns)
    if change == "not xlsx":
        path = path.rename(tmp_path / "Index.xls")
    assert _import(path, tmp_path / "data") == 1
    error = capsys.readouterr().err
    assert "refused, nothing was imported" in error and expected in error
    assert not [v for v in _phi_values(A, B) if v in error]
    assert _fetch(index_env, "SELECT * FROM patient") == []
    assert _fetch(index_env, "SELECT * FROM site") == []


def _workbook_of(url: str, path: Path, include_phi: bool, max_sheet_rows: int) -> None:
    async def write() -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            rows = [row async for row in study_rows(pool, include_phi)]
        finally:
            await pool.close()
        write_workbook(rows, path, include_phi, max_sheet_rows=max_sheet_rows)

    asyncio.run(write())


def test_the_index_workbook_imports_into_a_fresh_index_with_the_same_mappings(
    tmp_path: Path, index_env: str, other_database: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An index holding imported patients and studies, and some of its own.
    data = tmp_path / "data"
    assert _import(_workbook(tmp_path / "Index.xlsx", _rows()), data) == 0
    folders = [_write(synth.make_ct_series(2, patient_index=0), tmp_path / "in" / "a"),
               _write(synth.make_ct_series(2, patient_index=2), tmp_path / "in" / "c"),
               _write(synth.make_ct_series(1, patient_index=3), tmp_path / "in" / "d")]
    assert deidentify(folders, tmp_path / "out", data) == 0
    first = _mappings(index_env)
    assert len(first[0]) == 4 and len(first[1]) == 6

    # Its workbook, on sheets of three rows (header included) to cover the split.
    path = tmp_path / "Exported.xlsx"
    _workbook_of(index_env, path, include_phi=True, max_sheet_rows=3)
    assert openpyxl.load_workbook(path, read_only=True).sheetnames == [
        "Index", "Index (2)", "Index (3)"]
    monkeypatch.setenv("DATABASE_URL", other_database)
    capsys.readouterr()
    assert _import(path, data) == 0
    printed = capsys.readouterr().out
    assert "(shown by 6 rows)" in printed and "patients:    4 imported" in printed
    assert _mappings(other_database) == first
    assert _fetch(other_database, "SELECT site_id FROM site")[0][0] == SITE
    assert _fetch(other_database, "SELECT last_value FROM integer_key_type") == _fetch(
        index_env, "SELECT last_value FROM integer_key_type")

    # The second index gives new objects of those patients and studies the same pseudonyms
    # (the patients came with an issuer, which the workbook does not hold).
    again = _write(synth.make_ct_series(2, patient_index=2), tmp_path / "in" / "c-again")
    assert deidentify([again], tmp_path / "out-again", data) == 0
    before = [pydicom.dcmread(p) for p in outputs(tmp_path / "out")]
    [expected] = {(ds.PatientID, ds.StudyInstanceUID, ds.StudyDate, ds.AccessionNumber)
                  for ds in before if ds.PatientID == f"{SITE}-000008"}
    after = [pydicom.dcmread(p) for p in outputs(tmp_path / "out-again")]
    assert len(after) == 2
    assert {(ds.PatientID, ds.StudyInstanceUID, ds.StudyDate, ds.AccessionNumber)
            for ds in after} == {expected}
    # A workbook without PHI has the PHI columns and nothing in them, and is refused.
    bare = tmp_path / "Bare.xlsx"
    _workbook_of(index_env, bare, include_phi=False, max_sheet_rows=1_048_576)
    sheet = openpyxl.load_workbook(bare, read_only=True).worksheets[0]
    header, *body = list(sheet.iter_rows(values_only=True))
    assert list(header[:11]) == list(RSNA_COLUMNS)
    assert len(body) == 6
    for row in body:
        assert [row[i] for i in (2, 3, 4, 6, 8, 10)] == [None] * 6
        assert str(row[1]).startswith(f"{SITE}-")
    assert _import(bare, data) == 1
    assert "a workbook saved without PHI cannot be imported" in capsys.readouterr().err


def test_the_rsna_anonymizers_own_script_gives_new_objects_the_imported_pseudonyms(
    tmp_path: Path, index_env: str
) -> None:
    """The site's script (@ptid, @uid, @acc, @hashdate) run here after the import writes
    what the Anonymizer wrote."""
    script = Path(__file__).parents[1] / "data" / "ctp-scripts" / (
        "rsna-python-default-anonymizer.script")
    data = tmp_path / "data"
    assert _import(_workbook(tmp_path / "Index.xlsx", _rows()), data) == 0
    rt = synth.make_rt_set(n_ct=2, n_rois=1, n_beams=1, patient_index=0)
    source = _write([*rt.ct, rt.rtstruct], tmp_path / "in")
    assert deidentify([source], tmp_path / "out", data, "--script", str(script)) == 0
    written = [read(p) for p in outputs(tmp_path / "out")]
    assert len(written) == 3
    for ds in written:
        assert (ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyDate) == (
            f"{SITE}-000001", f"{ROOT}.{SITE}.1", "1", _shifted(A.study_date, OFFSET_A))


def test_offsets_forward_and_beyond_ten_years_are_applied_as_imported(
    tmp_path: Path, index_env: str
) -> None:
    """An Anonymizer that moved dates forward, by more than the 3650 days this system
    draws from: new objects move the same way, by as much."""
    forward, none = 5000, 0
    rows = _rows()
    rows[0][4:6] = [forward, _shifted(A.study_date, forward)]
    rows[1][4:6] = [forward, _shifted("20160105", forward)]
    rows[2][4:6] = [none, "20190812"]
    data = tmp_path / "data"
    assert _import(_workbook(tmp_path / "Index.xlsx", rows), data) == 0
    patients, _ = _mappings(index_env)
    assert patients[A.patient_id][2] == -forward and patients[B.patient_id][2] == none
    sources = [_write(synth.make_ct_series(1, patient_index=0), tmp_path / "in" / "a"),
               _write(synth.make_ct_series(1, patient_index=1), tmp_path / "in" / "b")]
    assert deidentify(sources, tmp_path / "out", data) == 0
    dates = {ds.PatientID: ds.StudyDate for ds in map(read, outputs(tmp_path / "out"))}
    assert dates == {f"{SITE}-000001": _shifted(A.study_date, forward),
                     f"{SITE}-000007": B.study_date}
