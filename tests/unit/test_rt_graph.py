"""The reference graph of RT sets and the checks that say precisely what is inconsistent."""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from shared.dicom.parse import DicomObject, parse
from shared.rt import (
    ObjectNode,
    Problem,
    Reference,
    ReferenceGraph,
    check_rt_set,
    check_set,
    node_of,
)
from tests import synth
from tests.conftest import SAMPLES

DICOMPYLER = SAMPLES / "dicompyler-core"
RT_UTILS = SAMPLES / "rt-utils" / "mock_data"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _files(paths: Iterable[Path]) -> list[DicomObject]:
    return [parse(path.read_bytes()) for path in paths]


def _objects(datasets: Iterable[Dataset]) -> list[DicomObject]:
    objects = []
    for ds in datasets:
        buffer = io.BytesIO()
        synth.write(ds, buffer)
        objects.append(parse(buffer.getvalue()))
    return objects


def _codes(problems: list[Problem]) -> list[str]:
    return [problem.code for problem in problems]


def _assert_no_patient_identity(problems: list[Problem], objects: list[DicomObject]) -> None:
    """No detail, UID or modality of a problem holds a patient name, name part or ID."""
    secrets: set[str] = set()
    for obj in objects:
        node = node_of(obj)
        secrets.add(node.patient_id)
        secrets.update(part for part in node.patient_name.split("^") if len(part) > 2)
    secrets.discard("")
    for problem in problems:
        text = f"{problem.code} {problem.object_uid} {problem.modality} {problem.detail}"
        for secret in secrets:
            assert secret not in text, problem


@pytest.fixture(scope="module")
def dicompyler_objects() -> list[DicomObject]:
    return _files(sorted(DICOMPYLER.glob("**/*.dcm")))


@pytest.fixture(scope="module")
def dicompyler_graph(dicompyler_objects: list[DicomObject]) -> ReferenceGraph:
    return ReferenceGraph.from_objects(dicompyler_objects)


def test_real_rt_set_from_dicompyler_has_no_problems(dicompyler_graph: ReferenceGraph) -> None:
    assert dict(dicompyler_graph.counts()) == {"CT": 98, "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    assert check_rt_set(dicompyler_graph) == []


def test_real_structure_set_references_every_ct_slice_of_the_set(
    dicompyler_graph: ReferenceGraph,
) -> None:
    (rtstruct,) = dicompyler_graph.of_modality("RTSTRUCT")
    series_images = [r for r in rtstruct.references if r.kind == "referenced-series-image"]
    assert len(series_images) == 98
    assert all(dicompyler_graph.nodes[r.uid].modality == "CT" for r in series_images)
    assert {r.uid for r in series_images} == {
        n.sop_instance_uid for n in dicompyler_graph.of_modality("CT")
    }
    assert series_images[0].path == (
        "ReferencedFrameOfReferenceSequence[0] > RTReferencedStudySequence[0] > "
        "RTReferencedSeriesSequence[0] > ContourImageSequence[0]"
    )
    assert series_images[0].target == "instance"
    assert series_images[0].sop_class_uid == CT_IMAGE_STORAGE
    contour_images = [r for r in rtstruct.references if r.kind == "contour-image"]
    assert contour_images
    assert all(dicompyler_graph.nodes[r.uid].modality == "CT" for r in contour_images)
    assert contour_images[0].path.startswith("ROIContourSequence[0] > ContourSequence[0]")


def test_real_set_shares_one_frame_of_reference_and_one_study(
    dicompyler_graph: ReferenceGraph,
) -> None:
    assert len(dicompyler_graph.by_study) == 1
    assert len(dicompyler_graph.by_frame_of_reference) == 1
    (study,) = dicompyler_graph.by_study
    (rtstruct,) = dicompyler_graph.of_modality("RTSTRUCT")
    assert rtstruct.frame_of_reference_uid is None  # declared in its sequence only
    studies = [r for r in rtstruct.references if r.kind == "referenced-study"]
    assert [(r.uid, r.target) for r in studies] == [(study, "study")]
    frames = {r.uid for r in rtstruct.references if r.target == "frame-of-reference"}
    assert frames == set(dicompyler_graph.by_frame_of_reference)


def test_real_plan_and_dose_link_back_to_structure_set_and_plan(
    dicompyler_graph: ReferenceGraph,
) -> None:
    (rtstruct,) = dicompyler_graph.of_modality("RTSTRUCT")
    (rtplan,) = dicompyler_graph.of_modality("RTPLAN")
    (rtdose,) = dicompyler_graph.of_modality("RTDOSE")
    by_struct = dicompyler_graph.referenced_by(rtstruct.sop_instance_uid)
    assert {(n.modality, r.kind) for n, r in by_struct} == {
        ("RTPLAN", "structure-set"),
        ("RTDOSE", "structure-set"),
    }
    assert [
        (n.sop_instance_uid, r.kind, r.path)
        for n, r in dicompyler_graph.referenced_by(rtplan.sop_instance_uid)
    ] == [(rtdose.sop_instance_uid, "rt-plan", "ReferencedRTPlanSequence[0]")]


def test_beam_reference_images_outside_the_set_dangle_but_are_not_problems(
    dicompyler_graph: ReferenceGraph,
) -> None:
    dangling = dicompyler_graph.dangling()
    assert len(dangling) == 4
    assert {(n.modality, r.kind) for n, r in dangling} == {("RTPLAN", "reference-image")}
    strict = check_set(dicompyler_graph, optional_kinds=frozenset())
    assert _codes(strict) == ["missing-instance"] * 4
    assert "RT image" in strict[0].detail


def test_generated_rt_set_has_no_problems() -> None:
    graph = ReferenceGraph.from_objects(_objects(synth.make_rt_set(12, 5, 3).all()))
    assert dict(graph.counts()) == {"CT": 12, "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    assert graph.dangling() == []
    assert check_rt_set(graph) == []


def test_slice_removed_from_real_set_is_named_with_its_sequence_paths(
    dicompyler_objects: list[DicomObject],
) -> None:
    removed = next(o for o in dicompyler_objects if node_of(o).sop_instance_uid.endswith(".529"))
    uid = node_of(removed).sop_instance_uid
    graph = ReferenceGraph.from_objects(o for o in dicompyler_objects if o is not removed)
    problems = check_rt_set(graph)
    (rtstruct,) = graph.of_modality("RTSTRUCT")
    assert {(p.code, p.object_uid, p.modality) for p in problems} == {
        ("missing-instance", rtstruct.sop_instance_uid, "RTSTRUCT")
    }
    (problem,) = problems  # the slice's references are reported together
    assert problem.detail.startswith(
        f"RTSTRUCT {rtstruct.sop_instance_uid} ReferencedFrameOfReferenceSequence[0] > "
        "RTReferencedStudySequence[0] > RTReferencedSeriesSequence[0] > ContourImageSequence["
    )
    assert f"references CT image {uid}, not in the set (and at " in problem.detail
    assert [n.modality for n, r in graph.dangling() if r.uid == uid] == ["RTSTRUCT"] * (
        1 + sum(1 for r in rtstruct.references if r.uid == uid and r.kind == "contour-image")
    )


def test_generated_set_missing_one_slice_names_the_contour_path() -> None:
    rt = synth.make_rt_set(8, 2, 1)
    gone = rt.ct.pop(0)  # only the BODY contour (ROI 1) and the series list reference it
    problems = check_rt_set(ReferenceGraph.from_objects(_objects(rt.all())))
    assert len(problems) == 1
    assert problems[0].code == "missing-instance"
    assert problems[0].object_uid == rt.rtstruct.SOPInstanceUID
    assert f"CT image {gone.SOPInstanceUID}, not in the set" in problems[0].detail
    graph = ReferenceGraph.from_objects(_objects(rt.all()))
    paths = sorted(r.path for _, r in graph.dangling())
    assert paths == [
        "ROIContourSequence[0] > ContourSequence[0] > ContourImageSequence[0]",
        "ReferencedFrameOfReferenceSequence[0] > RTReferencedStudySequence[0] > "
        "RTReferencedSeriesSequence[0] > ContourImageSequence[0]",
    ]


def test_structure_set_declaring_another_frame_of_reference_than_its_images() -> None:
    objects = _files([RT_UTILS / "rt.dcm", RT_UTILS / "ct_1.dcm", RT_UTILS / "ct_2.dcm"])
    graph = ReferenceGraph.from_objects(objects)
    (rtstruct,) = graph.of_modality("RTSTRUCT")
    (declared,) = {r.uid for r in rtstruct.references if r.target == "frame-of-reference"}
    problems = check_set(graph)
    mismatches = [p for p in problems if p.code == "frame-of-reference-mismatch"]
    assert sorted(p.object_uid for p in mismatches) == sorted(
        n.sop_instance_uid for n in graph.of_modality("CT")
    )
    for problem in mismatches:
        assert problem.modality == "CT"
        assert f"declares {declared}" in problem.detail
        assert "ReferencedFrameOfReferenceSequence[0]" in problem.detail
    unknown = [p for p in problems if p.code == "frame-of-reference-unknown"]
    assert [p.object_uid for p in unknown] == [rtstruct.sop_instance_uid]
    assert set(_codes(problems)) == {"frame-of-reference-mismatch", "frame-of-reference-unknown"}
    _assert_no_patient_identity(problems, objects)


def test_structure_set_referencing_five_images_of_which_two_exist() -> None:
    objects = _files(
        [RT_UTILS / "invalid_reference_rt.dcm", RT_UTILS / "ct_1.dcm", RT_UTILS / "ct_2.dcm"]
    )
    graph = ReferenceGraph.from_objects(objects)
    problems = check_set(graph)
    assert _codes(problems) == ["missing-instance"] * 3
    missing = {r.uid for _, r in graph.dangling()}
    assert len(missing) == 3
    for uid in missing:
        (problem,) = [p for p in problems if f"CT image {uid}," in p.detail]
        assert problem.modality == "RTSTRUCT"
        assert "ContourImageSequence[" in problem.detail
    _assert_no_patient_identity(problems, objects)


def test_structure_set_referencing_an_image_that_does_not_exist() -> None:
    objects = _files(
        [RT_UTILS / "non_existent_reference_rt.dcm", RT_UTILS / "ct_1.dcm", RT_UTILS / "ct_2.dcm"]
    )
    problems = check_set(ReferenceGraph.from_objects(objects))
    assert _codes(problems) == ["missing-instance"]
    assert problems[0].detail.endswith("not in the set (and at 3 other places)")
    assert "ROIContourSequence[0] > ContourSequence[0] > ContourImageSequence[0]" in (
        problems[0].detail
    )


def test_plan_of_another_patient_is_reported_without_naming_anyone() -> None:
    rt = synth.make_rt_set(6, 2, 1)
    other = synth.phi_for(1)
    rt.rtplan.PatientID = other.patient_id
    rt.rtplan.PatientName = other.patient_name
    objects = _objects(rt.all())
    problems = check_rt_set(ReferenceGraph.from_objects(objects))
    assert [(p.code, p.object_uid, p.modality) for p in problems] == [
        ("patient-mismatch", rt.rtplan.SOPInstanceUID, "RTPLAN")
    ]
    assert "8 other objects" in problems[0].detail
    _assert_no_patient_identity(problems, objects)


def test_plan_taken_from_another_patients_set() -> None:
    rt, foreign = synth.make_rt_set(6, 2, 1), synth.make_rt_set(4, 2, 1, patient_index=1)
    objects = _objects([*rt.ct, rt.rtstruct, foreign.rtplan, rt.rtdose])
    problems = check_rt_set(ReferenceGraph.from_objects(objects))
    plan_uid = foreign.rtplan.SOPInstanceUID
    codes = {(p.code, p.object_uid) for p in problems}
    assert ("patient-mismatch", plan_uid) in codes
    assert ("study-mismatch", plan_uid) in codes
    assert ("frame-of-reference-mismatch", plan_uid) in codes
    assert ("missing-instance", plan_uid) in codes  # its structure set is not here
    assert ("missing-link", plan_uid) in codes
    assert ("missing-instance", rt.rtdose.SOPInstanceUID) in codes  # the set's own plan
    _assert_no_patient_identity(problems, objects)


def test_two_plans_are_too_many() -> None:
    rt = synth.make_rt_set(6, 2, 1)
    second = synth.make_rt_set(6, 2, 2).rtplan  # same patient, study and structure set
    second.SOPInstanceUID = synth.uid_for("second-plan")
    problems = check_rt_set(ReferenceGraph.from_objects(_objects([*rt.all(), second])))
    assert [(p.code, p.object_uid, p.modality) for p in problems] == [
        ("too-many-objects", "", "RTPLAN")
    ]
    assert rt.rtplan.SOPInstanceUID in problems[0].detail
    assert second.SOPInstanceUID in problems[0].detail


def test_set_without_dose_misses_an_object() -> None:
    rt = synth.make_rt_set(6, 2, 1)
    problems = check_rt_set(ReferenceGraph.from_objects(_objects([*rt.ct, rt.rtstruct, rt.rtplan])))
    assert [(p.code, p.object_uid, p.modality, p.detail) for p in problems] == [
        ("missing-object", "", "RTDOSE", "the set holds no RTDOSE")
    ]
    assert check_set(ReferenceGraph.from_objects(_objects([*rt.ct, rt.rtstruct]))) == []


def test_dose_referencing_a_plan_not_in_the_set() -> None:
    rt = synth.make_rt_set(6, 2, 1)
    elsewhere = synth.uid_for("plan-elsewhere")
    rt.rtdose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = elsewhere
    problems = check_rt_set(ReferenceGraph.from_objects(_objects(rt.all())))
    dose = rt.rtdose.SOPInstanceUID
    assert [(p.code, p.object_uid) for p in problems] == [
        ("missing-instance", dose),
        ("missing-link", dose),
    ]
    assert problems[0].detail == (
        f"RTDOSE {dose} ReferencedRTPlanSequence[0] references RTPLAN {elsewhere}, not in the set"
    )
    assert problems[1].detail == f"RTDOSE {dose} references no RTPLAN of the set"


def test_set_without_images_or_structure_set() -> None:
    rt = synth.make_rt_set(3, 1, 1)
    problems = check_rt_set(ReferenceGraph.from_objects(_objects([rt.rtplan, rt.rtdose])))
    assert ("missing-object", "CT") in {(p.code, p.modality) for p in problems}
    assert ("missing-object", "RTSTRUCT") in {(p.code, p.modality) for p in problems}
    assert problems == sorted(problems, key=lambda p: (p.code, p.modality, p.object_uid, p.detail))


def test_same_instance_twice_is_reported_once() -> None:
    rt = synth.make_rt_set(3, 1, 1)
    objects = _objects([*rt.all(), rt.ct[0]])
    problems = check_rt_set(ReferenceGraph.from_objects(objects))
    assert [(p.code, p.object_uid) for p in problems] == [
        ("duplicate-instance", rt.ct[0].SOPInstanceUID)
    ]


def test_detached_study_reference_points_at_the_study_and_history_is_ignored() -> None:
    rt = synth.make_rt_set(2, 1, 1)
    nodes = [node_of(obj) for obj in _objects(rt.all())]
    rtstruct = next(n for n in nodes if n.modality == "RTSTRUCT")
    study_refs = [r for r in rtstruct.references if r.kind == "referenced-study"]
    assert study_refs == [
        Reference(
            "referenced-study",
            rt.rtstruct.StudyInstanceUID,
            "ReferencedFrameOfReferenceSequence[0] > RTReferencedStudySequence[0]",
            "study",
            "1.2.840.10008.3.1.2.3.1",
        )
    ]
    patient_refs = [r for r in rtstruct.references if r.kind == "referenced-patient"]
    assert [r.target for r in patient_refs] == ["study"]
    assert not any(
        r.path.startswith("OriginalAttributesSequence") for n in nodes for r in n.references
    )


def test_nodes_hold_identity_of_objects() -> None:
    rt = synth.make_rt_set(2, 1, 1)
    node = node_of(_objects([rt.ct[0]])[0])
    assert isinstance(node, ObjectNode)
    assert node.sop_instance_uid == rt.ct[0].SOPInstanceUID
    assert node.sop_class_uid == CT_IMAGE_STORAGE
    assert node.modality == "CT"
    assert node.study_uid == rt.ct[0].StudyInstanceUID
    assert node.series_uid == rt.ct[0].SeriesInstanceUID
    assert node.frame_of_reference_uid == rt.ct[0].FrameOfReferenceUID
    assert node.patient_id == rt.ct[0].PatientID
    assert node.patient_name == str(rt.ct[0].PatientName)


def test_two_hundred_slice_set_is_graphed_and_checked_quickly() -> None:
    rt = synth.make_rt_set(200, 9, 5, rows=16, cols=16)
    objects = _objects(rt.all())
    start = time.perf_counter()
    graph = ReferenceGraph.from_objects(objects)
    problems = check_rt_set(graph)
    elapsed = time.perf_counter() - start
    print(f"\ngraph + check of {len(objects)} objects: {elapsed * 1000:.1f} ms")
    assert problems == []
    assert len(graph.nodes) == 203
    assert elapsed < 1.0
