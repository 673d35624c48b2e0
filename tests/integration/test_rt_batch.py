"""``anon rt-batch``: RT planning sets de-identified with every link intact, broken sets
reported and skipped, output valid for dciodvfy and consistent for dcentvfy."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import asyncpg
import pydicom
import pytest
from pydicom.dataset import Dataset

from services.cli.main import main
from shared.dicom.parse import parse
from shared.dicom.uids import UidMapper
from shared.rt import ReferenceGraph, check_rt_set
from tests import synth
from tests.conftest import SAMPLES
from tests.helpers import originals_by_pseudo_sop, read, references, site_secret

pytestmark = pytest.mark.integration

DCIODVFY = Path("/usr/bin/dciodvfy")
DCENTVFY = Path("/usr/bin/dcentvfy")
DICOMPYLER = SAMPLES / "dicompyler-core"
RT_UTILS = SAMPLES / "rt-utils" / "mock_data"
TRACKING_HEADER = "original_patient_id,new_patient_id,original_plan_id,hospital"


def _run(root: Path, data: Path, *extra: str) -> int:
    return main(["rt-batch", str(root), "--data-dir", str(data), "--no-progress", *extra])


def _write_set(folder: Path, datasets: list[Dataset]) -> None:
    """Write a set under arbitrary names: CT images in a sub-folder, the RT objects beside
    it, plus a file that is not DICOM."""
    (folder / "images" / "axial").mkdir(parents=True)
    for n, ds in enumerate(datasets):
        if ds.Modality == "CT":
            synth.write(ds, folder / "images" / "axial" / f"IMG{n:05d}")
        else:
            synth.write(ds, folder / f"{ds.Modality.lower()}_{n}.bin")
    (folder / "notes.txt").write_text("exported for planning review\n")


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _outputs(folder: Path) -> list[Dataset]:
    return [read(p) for p in sorted(folder.glob("*.dcm"))]


def _inputs(folder: Path) -> list[Dataset]:
    return [read(p) for p in sorted(folder.rglob("*.dcm"))]


def _tracking(out: Path) -> str:
    return (out / f"tracking_{date.today():%Y%m%d}.csv").read_text(encoding="utf-8")


def _report_blocks(out: Path) -> dict[str, list[str]]:
    """The report's lines per set folder name, the set's heading first."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (out / "rt_batch_report.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^set (\S+): ", line)
        if match:
            current = blocks.setdefault(match[1], [])
        elif not line.startswith(" "):
            current = None
        if current is not None:
            current.append(line)
    return blocks


def _full_years(birth: str, on: str) -> int:
    b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    d = date(int(on[:4]), int(on[4:6]), int(on[6:]))
    return d.year - b.year - ((d.month, d.day) < (b.month, b.day))


def _instance_count(database_url: str, prefix: str) -> int:
    async def fetch() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(await connection.fetchval(
                "SELECT count(*) FROM instance WHERE pseudo_patient_id LIKE $1", prefix + "%"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _check_linked(written: list[Dataset], inputs: list[Dataset], mapper: UidMapper) -> None:
    """The output set passes the RT check; what dangled among the inputs (reference images
    of the real plan) is all that dangles among the outputs; one study, one frame of
    reference; files named after modality and SOP instance UID."""
    graph = ReferenceGraph.from_objects(parse(_bytes(ds)) for ds in written)
    assert check_rt_set(graph) == []
    known = {str(ds.SOPInstanceUID) for ds in inputs}
    dangling_before = {mapper(r) for ds in inputs for r in references(ds) if r not in known}
    instances = {str(ds.SOPInstanceUID) for ds in written}
    dangling_after = {r for ds in written for r in references(ds) if r not in instances}
    assert dangling_after == dangling_before
    assert len({str(ds.StudyInstanceUID) for ds in written}) == 1
    assert len({str(ds.FrameOfReferenceUID) for ds in written
                if "FrameOfReferenceUID" in ds}) == 1
    assert len(written) == len(inputs)


def _bytes(ds: Dataset) -> bytes:
    return Path(ds.filename).read_bytes()


@pytest.fixture
def good_root(tmp_path: Path) -> Path:
    """Three generated sets (several ROIs, beams) and the real dicompyler set."""
    root = tmp_path / "root"
    for index in range(3):
        rt = synth.make_rt_set(n_ct=8 + index, n_rois=4 + index, n_beams=2 + index,
                               patient_index=index)
        _write_set(root / f"patient_{index}", rt.all())
    shutil.copytree(DICOMPYLER, root / "zz_dicompyler")
    return root


def test_sets_come_out_linked_renamed_and_tracked(
    tmp_path: Path, index_env: str, good_root: Path
) -> None:
    before = _digests(good_root)
    out, data = tmp_path / "out", tmp_path / "data"
    assert _run(good_root, data, "--out", str(out), "--id-prefix", "NEWID", "--first-index",
                "5", "--family-name", "Doe", "--given-name", "Jane", "--hospital",
                "Saint Elsewhere", "--machine-name", "LINAC_7", "--jobs", "2") == 0
    assert _digests(good_root) == before  # originals untouched
    mapper = UidMapper(site_secret(index_env))
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["ANON_005", "ANON_006", "ANON_007", "ANON_008"]
    sources = ["patient_0", "patient_1", "patient_2", "zz_dicompyler"]
    total = 0
    for number, source in enumerate(sources, start=5):
        inputs = _inputs(good_root / source) if source.startswith("zz") else [
            read(p) for p in sorted((good_root / source).rglob("*"))
            if p.is_file() and p.suffix != ".txt"
        ]
        written = _outputs(out / f"ANON_{number:03d}")
        total += len(written)
        _check_linked(written, inputs, mapper)
        for ds in written:
            assert Path(ds.filename).name == f"{ds.Modality}_{ds.SOPInstanceUID}.dcm"
            assert ds.PatientID == f"NEWID{number:03d}"
            assert str(ds.PatientName) == "Doe^Jane"
            assert ds.PatientSex == inputs[0].PatientSex
            assert ds.PatientIdentityRemoved == "YES"
        ct = next(ds for ds in written if ds.Modality == "CT")
        if source.startswith("patient"):
            phi = synth.phi_for(int(source[-1]))
            for ds in written:
                assert ds.PatientAge == phi.patient_age
                assert ds.PatientBirthDate == written[0].PatientBirthDate
            birth = str(ct.PatientBirthDate)
            assert _full_years(birth, str(ct.StudyDate)) == int(phi.patient_age[:3])
            assert birth != phi.birth_date and ct.StudyDate != phi.study_date
        else:
            assert all(ds.PatientBirthDate == "" for ds in written)  # no age to keep
        plan = next(ds for ds in written if ds.Modality == "RTPLAN")
        assert {b.TreatmentMachineName for b in plan.BeamSequence} == {"LINAC_7"}
    assert _tracking(out) == (
        f"{TRACKING_HEADER}\n"
        "PID-7734-QX,NEWID005,PLAN-QX,Saint Elsewhere\n"
        "PID-8734-QX,NEWID006,PLAN-QX,Saint Elsewhere\n"
        "PID-9734-QX,NEWID007,PLAN-QX,Saint Elsewhere\n"
        "123456,NEWID008,B1,Saint Elsewhere\n"
    )
    blocks = _report_blocks(out)
    assert [blocks[s][0].split(": ")[1].split(" ")[0] for s in sources] == ["done"] * 4
    assert any(line.startswith("  file notes.txt ignored, not DICOM: ")
               for line in blocks["patient_0"])
    assert _instance_count(index_env, "NEWID") == total
    originals = originals_by_pseudo_sop(index_env)
    assert len(originals) == total

    # One process gives the same files; a re-run rewrites nothing differently.
    again = tmp_path / "again"
    assert _run(good_root, data, "--out", str(again), "--id-prefix", "NEWID", "--first-index",
                "5", "--family-name", "Doe", "--given-name", "Jane", "--hospital",
                "Saint Elsewhere", "--machine-name", "LINAC_7", "--jobs", "1") == 0
    for folder in folders:
        assert _digests(again / folder) == _digests(out / folder)
    assert _tracking(again) == _tracking(out)


def test_defaults_write_into_root_and_keep_the_machine(tmp_path: Path, index_env: str) -> None:
    root = tmp_path / "root"
    rt = synth.make_rt_set(n_ct=5, n_rois=2, n_beams=2, patient_index=4)
    _write_set(root / "only", rt.all())
    assert _run(root, tmp_path / "data") == 0
    written = _outputs(root / "ANON_001")
    assert {str(ds.PatientName) for ds in written} == {"ANON001"}
    assert {ds.PatientID for ds in written} == {"ANON001"}
    plan = next(ds for ds in written if ds.Modality == "RTPLAN")
    assert {b.TreatmentMachineName for b in plan.BeamSequence} == {synth.TREATMENT_MACHINE}
    assert _tracking(root) == f"{TRACKING_HEADER}\nPID-11734-QX,ANON001,PLAN-QX,\n"
    # A second run in place neither takes its own output for a set nor changes it.
    first = _digests(root / "ANON_001")
    assert _run(root, tmp_path / "data") == 0
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["ANON_001", "only"]
    assert _digests(root / "ANON_001") == first


def _broken_root(root: Path) -> dict[str, str]:
    """Broken sets around two good ones; returns what each broken set lacks or breaks."""
    facts: dict[str, str] = {}
    wrong_for = synth.make_rt_set(n_ct=5, n_rois=2, n_beams=1, patient_index=1)
    wrong_for.ct[2].FrameOfReferenceUID = synth.uid_for("another frame")
    facts["a_wrong_frame"] = str(wrong_for.ct[2].SOPInstanceUID)
    _write_set(root / "a_wrong_frame", wrong_for.all())

    missing = synth.make_rt_set(n_ct=6, n_rois=2, n_beams=1, patient_index=2)
    facts["b_missing_slice"] = str(missing.ct[3].SOPInstanceUID)
    _write_set(root / "b_missing_slice", [ds for ds in missing.all() if ds is not missing.ct[3]])

    _write_set(root / "c_good", synth.make_rt_set(4, 2, 1, patient_index=3).all())

    foreign = synth.make_rt_set(n_ct=4, n_rois=2, n_beams=1, patient_index=4)
    foreign.rtplan.PatientID = synth.phi_for(5).patient_id
    foreign.rtplan.PatientName = synth.phi_for(5).patient_name
    facts["d_foreign_plan"] = str(foreign.rtplan.SOPInstanceUID)
    _write_set(root / "d_foreign_plan", foreign.all())

    two = synth.make_rt_set(n_ct=4, n_rois=2, n_beams=1, patient_index=6)
    second = synth.make_rt_set(n_ct=4, n_rois=2, n_beams=2, patient_index=6).rtplan
    second.SOPInstanceUID = synth.uid_for("second plan")
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    facts["e_two_plans"] = str(second.SOPInstanceUID)
    _write_set(root / "e_two_plans", [*two.all(), second])

    no_dose = synth.make_rt_set(n_ct=4, n_rois=2, n_beams=1, patient_index=7)
    _write_set(root / "f_no_dose", [ds for ds in no_dose.all() if ds is not no_dose.rtdose])

    broken = root / "g_rt_utils"
    broken.mkdir()
    for name in ("ct_1.dcm", "ct_2.dcm", "invalid_reference_rt.dcm"):
        shutil.copyfile(RT_UTILS / name, broken / name)

    _write_set(root / "h_good", synth.make_rt_set(4, 2, 1, patient_index=8).all())
    return facts


def test_broken_sets_are_reported_precisely_and_skipped(
    tmp_path: Path, index_env: str
) -> None:
    root = tmp_path / "root"
    facts = _broken_root(root)
    before = _digests(root)
    assert _run(root, tmp_path / "data") == 1  # some sets were skipped
    assert {k: v for k, v in _digests(root).items() if k in before} == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("ANON_")) == [
        "ANON_001", "ANON_002"]
    assert {ds.PatientID for ds in _outputs(root / "ANON_001")} == {"ANON001"}
    assert {ds.PatientID for ds in _outputs(root / "ANON_002")} == {"ANON002"}
    assert _tracking(root) == (f"{TRACKING_HEADER}\n"
                               f"{synth.phi_for(3).patient_id},ANON001,PLAN-QX,\n"
                               f"{synth.phi_for(8).patient_id},ANON002,PLAN-QX,\n")
    blocks = _report_blocks(root)
    status = {name: lines[0].split(": ")[1].split(" ")[0] for name, lines in blocks.items()}
    assert status == {"a_wrong_frame": "skipped", "b_missing_slice": "skipped",
                      "c_good": "done", "d_foreign_plan": "skipped", "e_two_plans": "skipped",
                      "f_no_dose": "skipped", "g_rt_utils": "skipped", "h_good": "done"}

    def problems(name: str) -> list[str]:
        return [line.strip().removeprefix("problem ") for line in blocks[name]
                if line.strip().startswith("problem ")]

    wrong = problems("a_wrong_frame")
    assert len(wrong) == 1 and wrong[0].startswith("[frame-of-reference-mismatch] CT ")
    assert facts["a_wrong_frame"] in wrong[0] and synth.uid_for("another frame") in wrong[0]
    gap = problems("b_missing_slice")
    assert {p.split("]")[0] for p in gap} == {"[missing-instance"}
    assert all(facts["b_missing_slice"] in p and "not in the set" in p for p in gap)
    foreign = problems("d_foreign_plan")
    assert foreign == [f"[patient-mismatch] RTPLAN {facts['d_foreign_plan']} has another "
                       f"PatientID than the 6 other objects of the set"]
    two = problems("e_two_plans")
    assert any(p.startswith("[too-many-objects] the set holds 2 RTPLAN objects")
               and facts["e_two_plans"] in p for p in two)
    assert problems("f_no_dose") == ["[missing-object] the set holds no RTDOSE"]
    rt_utils = problems("g_rt_utils")
    assert sum(p.startswith("[missing-instance] RTSTRUCT") for p in rt_utils) == 3
    assert "[missing-object] the set holds no RTPLAN" in rt_utils
    # No identifying value of any patient reaches the report.
    report = (root / "rt_batch_report.txt").read_bytes()
    for index in range(9):
        assert synth.phi_for(index).patient_id.encode() not in report
        assert synth.phi_for(index).patient_name.encode() not in report


def test_force_processes_a_broken_set_with_its_problems_reported(
    tmp_path: Path, index_env: str
) -> None:
    root = tmp_path / "root"
    rt = synth.make_rt_set(n_ct=5, n_rois=2, n_beams=1, patient_index=1)
    rt.ct[2].FrameOfReferenceUID = synth.uid_for("another frame")
    _write_set(root / "wrong_frame", rt.all())
    out = tmp_path / "out"
    assert _run(root, tmp_path / "data", "--out", str(out)) == 1
    assert not (out / "ANON_001").exists()
    assert _run(root, tmp_path / "data", "--out", str(out), "--force") == 1
    written = _outputs(out / "ANON_001")
    assert len(written) == 8
    lines = _report_blocks(out)["wrong_frame"]
    assert lines[0].startswith("set wrong_frame: forced -> ANON_001 (ANON001), 8 objects")
    assert any("problem [frame-of-reference-mismatch] CT " + str(rt.ct[2].SOPInstanceUID)
               in line for line in lines)
    # The output keeps exactly the input's problem (now with new UIDs), nothing more.
    mapper = UidMapper(site_secret(index_env))
    carried = [line for line in lines if "output still has" in line]
    assert len(carried) == 1 and mapper(str(rt.ct[2].SOPInstanceUID)) in carried[0]
    assert not any("output error" in line for line in lines)
    assert _tracking(out) == f"{TRACKING_HEADER}\n{synth.phi_for(1).patient_id},ANON001,PLAN-QX,\n"


def _tool(path: Path) -> str:
    if not path.exists():
        pytest.fail(f"{path.name} is required: apt-get install dicom3tools")
    return str(path)


_UID = re.compile(r"\d+(?:\.\d+){2,}")
_VALUE = re.compile(r"(Value[^<]*)<[^<>]*>")


def _dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run([_tool(DCIODVFY), str(path)], capture_output=True, text=True,
                            errors="replace", check=False)
    errors = set()
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("Error"):
            errors.add(_VALUE.sub(r"\1<value>", _UID.sub("<uid>", line)).strip())
    return errors


def _dcentvfy(paths: list[Path]) -> list[str]:
    result = subprocess.run([_tool(DCENTVFY), *map(str, paths)], capture_output=True,
                            text=True, errors="replace", check=False)
    lines = (result.stdout + result.stderr).splitlines()
    found = [line for line in lines if line.startswith(("Error", "Warning"))]
    if result.returncode != 0 and not found:
        found.append(f"exit status {result.returncode}")
    return found


def test_output_passes_dciodvfy_and_dcentvfy(tmp_path: Path, index_env: str) -> None:
    root = tmp_path / "root"
    rt = synth.make_rt_set(n_ct=6, n_rois=3, n_beams=2, patient_index=2)
    _write_set(root / "generated", rt.all())
    shutil.copytree(DICOMPYLER, root / "real")
    out = tmp_path / "out"
    assert _run(root, tmp_path / "data", "--out", str(out), "--machine-name", "LINAC_2") == 0

    # dcentvfy does notice an inconsistent set, and prints nothing on the consistent input.
    generated = [
        p for p in sorted((root / "generated").rglob("*"))
        if p.is_file() and p.suffix != ".txt"
        and pydicom.dcmread(p, stop_before_pixels=True).Modality != "RTDOSE"
    ]
    assert _dcentvfy(generated) == []
    odd = tmp_path / "odd.dcm"
    changed = pydicom.dcmread(generated[0])
    changed.PatientSex = "M" if changed.PatientSex != "M" else "F"
    changed.save_as(odd)
    assert any("PatientSex" in line for line in _dcentvfy([odd, *generated[1:]]))

    originals = originals_by_pseudo_sop(index_env)
    inputs = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".txt"
    }
    for folder in ("ANON_001", "ANON_002"):
        written = sorted((out / folder).glob("*.dcm"))
        for path in written:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            source = inputs[originals[str(ds.SOPInstanceUID)]]
            new = _dciodvfy_errors(path) - _dciodvfy_errors(source)
            assert not new, f"{folder}/{path.name}: {sorted(new)}"
        assert _dcentvfy([p for p in written if not p.name.startswith("RTDOSE_")]) == []


@pytest.mark.parametrize(
    ("age", "birth", "study", "offset", "expected"),
    [
        ("057Y", "", "20190314", 10, "19620304"),  # age in years at the shifted study date
        ("006M", "", "20200831", 0, "20200229"),  # months; the 31st becomes the month's end
        ("003W", "", "20190322", 1, "20190228"),
        ("", "20000229", "20190301", 0, "20000301"),  # 19 whole years from the birth date
        ("", "20190101", "20190301", 5, "20181227"),  # under a year: the days are kept
        ("", "", "20190301", 5, ""),  # no age known
        ("057Y", "", "", 5, ""),  # no study date
    ],
)
def test_synthetic_birth_date_keeps_the_age(
    age: str, birth: str, study: str, offset: int, expected: str
) -> None:
    from shared.rt.batch_rules import synthetic_birth_date

    assert synthetic_birth_date(age, birth, study, offset) == expected


# -- what the console names ----------------------------------------------------------------

_NOTICE = ("skipped ", "forced ", "failed ")


def _noted(found: list[str], noun: str) -> str:
    """What the console should say after a set's name: its first problem or error as the
    report words it, and how many there are."""
    return f"{found[0]} ({len(found)} {noun}{'' if len(found) == 1 else 's'})"


def _report_items(lines: list[str], prefix: str) -> list[str]:
    return [line.strip().removeprefix(prefix) for line in lines
            if line.strip().startswith(prefix)]


def _assert_no_patient_values(text: str, patients: range) -> None:
    for index in patients:
        assert synth.phi_for(index).patient_id not in text
        assert synth.phi_for(index).patient_name not in text


def test_console_names_each_skipped_set_with_its_first_problem_then_the_report(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    _broken_root(root)
    capsys.readouterr()
    assert _run(root, tmp_path / "data") == 1
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    blocks = _report_blocks(root)
    expected = []
    for name in sorted(blocks):
        if blocks[name][0] != f"set {name}: skipped":
            continue
        problems = _report_items(blocks[name], "problem ")
        expected.append(f"skipped {name}: {_noted(problems, 'problem')}")
    assert len(expected) == 6
    notices = [line for line in lines if line.startswith(_NOTICE)]
    assert notices == expected
    assert "sets skipped:  6" in lines
    report = lines.index(f"report:        {root / 'rt_batch_report.txt'}")
    assert report > lines.index(notices[-1])
    _assert_no_patient_values(printed, range(9))


def test_console_names_forced_and_failed_sets_with_their_first_problem(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    wrong = synth.make_rt_set(n_ct=5, n_rois=2, n_beams=1, patient_index=1)
    wrong.ct[2].FrameOfReferenceUID = synth.uid_for("another frame")
    _write_set(root / "a_wrong_frame", wrong.all())
    _write_set(root / "b_unwritable", synth.make_rt_set(4, 2, 1, patient_index=2).all())
    _write_set(root / "c_good", synth.make_rt_set(4, 2, 1, patient_index=3).all())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "ANON_002").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    assert _run(root, tmp_path / "data", "--out", str(out), "--force") == 1
    assert not any(elsewhere.iterdir())
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    blocks = _report_blocks(out)
    assert blocks["a_wrong_frame"][0].startswith("set a_wrong_frame: forced -> ANON_001 ")
    assert blocks["b_unwritable"][0].startswith("set b_unwritable: failed -> ANON_002 ")
    assert blocks["c_good"][0].startswith("set c_good: done -> ANON_003 ")
    problems = _report_items(blocks["a_wrong_frame"], "problem ")
    errors = _report_items(blocks["b_unwritable"], "error ")
    assert problems[0].startswith("[frame-of-reference-mismatch] CT ")
    assert errors[0].startswith("not written: ")
    assert [line for line in lines if line.startswith(_NOTICE)] == [
        f"forced a_wrong_frame -> ANON_001: {_noted(problems, 'problem')}",
        f"failed b_unwritable -> ANON_002: error {_noted(errors, 'error')}",
    ]
    assert "sets forced:   1" in lines and "sets failed:   1" in lines
    assert lines[-2] == f"report:        {out / 'rt_batch_report.txt'}"
    _assert_no_patient_values(printed, range(1, 4))


def test_console_is_the_summary_alone_when_every_set_is_done(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    _write_set(root / "only", synth.make_rt_set(4, 2, 1, patient_index=5).all())
    capsys.readouterr()
    assert _run(root, tmp_path / "data") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sets done:     1"
    assert lines[-2:] == [f"report:        {root / 'rt_batch_report.txt'}",
                          f"tracking file: {root / f'tracking_{date.today():%Y%m%d}.csv'}"]
