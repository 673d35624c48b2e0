"""Consistency checks of a set of objects and of a radiotherapy set.

:func:`check_set` verifies what any set handed on together must satisfy: references
resolve within the set, one frame of reference (the one the structure set declares), one
study, one patient. :func:`check_rt_set` adds the radiotherapy rules: CT images, one
structure set, one plan and one dose, linked image <- RTSTRUCT <- RTPLAN <- RTDOSE. Every
problem is reported, each with a precise detail naming UIDs, modalities and sequence paths
but never a patient name or ID, so that reports can be logged and shared.

Each problem is worded by one public function here (:func:`reference_groups`,
:func:`frame_mismatch`, :func:`patient_mismatch`, :func:`missing_link`, ...), which the
incremental check of rt-relinker (:mod:`shared.rt.set_state`) calls too, so that both say
the same thing of the same set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.rt.graph import (
    TARGET_FRAME_OF_REFERENCE,
    TARGET_INSTANCE,
    TARGET_SERIES,
    ObjectNode,
    Reference,
    ReferenceGraph,
)

# A set with any of these objects is an RT set, checked by the RT rules.
RT_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD"})
# Problems that more objects can cure: a set with only these is waiting, not inconsistent.
WAITING_CODES = frozenset({
    "missing-instance", "missing-object", "missing-series", "missing-link",
    "frame-of-reference-unknown",
})

# References to objects that are not expected to travel with a set: the reference images
# of a plan's beams (DRRs, simulator or portal images) live in the imaging archive.
OPTIONAL_KINDS = frozenset({"reference-image"})

_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR image",
    "1.2.840.10008.5.1.4.1.1.2": "CT image",
    "1.2.840.10008.5.1.4.1.1.2.1": "enhanced CT image",
    "1.2.840.10008.5.1.4.1.1.4": "MR image",
    "1.2.840.10008.5.1.4.1.1.4.1": "enhanced MR image",
    "1.2.840.10008.5.1.4.1.1.128": "PET image",
    "1.2.840.10008.5.1.4.1.1.481.1": "RT image",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.8": "RT ion plan",
    "1.2.840.10008.5.1.4.1.1.66.1": "spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.3": "deformable registration",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
}

_KIND_NAMES = {"structure-set": "RTSTRUCT", "rt-plan": "RTPLAN"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a set: a stable ``code``, the SOP instance UID of the object
    concerned ("" for the set as a whole), its modality (or the modality a set-level
    problem is about) and a ``detail`` free of patient names and IDs."""

    code: str
    object_uid: str
    modality: str
    detail: str


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in the order every check reports them: by code, modality, object, detail."""
    return sorted(problems, key=lambda p: (p.code, p.modality, p.object_uid, p.detail))


def label(modality: str, uid: str) -> str:
    """How a problem names an object: its modality (or "object") and SOP instance UID."""
    return f"{modality or 'object'} {uid}"


def _label(node: ObjectNode) -> str:
    return label(node.modality, node.sop_instance_uid)


def _target_name(reference: Reference) -> str:
    return _CLASS_NAMES.get(reference.sop_class_uid) or _KIND_NAMES.get(reference.kind, "instance")


def _elsewhere(count: int) -> str:
    if count == 0:
        return ""
    return f" (and at {count} other place{'s' if count > 1 else ''})"


def _grouped(references: Iterable[Reference]) -> dict[str, list[Reference]]:
    """References grouped by referenced UID, in the order first met."""
    groups: dict[str, list[Reference]] = {}
    for reference in references:
        groups.setdefault(reference.uid, []).append(reference)
    return groups


def _principal(values: Iterable[str]) -> tuple[str, int]:
    """The most frequent value (the smallest on ties) and its count."""
    counts = Counter(values)
    value = min(counts, key=lambda v: (-counts[v], v))
    return value, counts[value]


def reference_groups(
    node: ObjectNode, optional_kinds: frozenset[str] = OPTIONAL_KINDS
) -> list[tuple[str, str, Problem]]:
    """The references of ``node`` that can dangle, one per (target kind, referenced UID),
    each with the problem it is when no object of the set answers it: ``missing-instance``
    (no object with that SOP instance UID; kinds in ``optional_kinds`` may dangle),
    ``missing-series`` (no object of that series), ``frame-of-reference-unknown`` (no object
    with that FrameOfReferenceUID). Each is reported once, where it is first met."""
    groups: list[tuple[str, str, Problem]] = []
    instances = _grouped(
        r for r in node.references
        if r.target == TARGET_INSTANCE and r.kind not in optional_kinds
    )
    for uid, refs in instances.items():
        groups.append((TARGET_INSTANCE, uid, Problem(
            "missing-instance",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} {refs[0].path} references {_target_name(refs[0])} {uid}, "
            f"not in the set{_elsewhere(len(refs) - 1)}",
        )))
    series = _grouped(r for r in node.references if r.target == TARGET_SERIES)
    for uid, refs in series.items():
        groups.append((TARGET_SERIES, uid, Problem(
            "missing-series",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} {refs[0].path} references series {uid}, of which no "
            f"object is in the set{_elsewhere(len(refs) - 1)}",
        )))
    frames = _grouped(r for r in node.references if r.target == TARGET_FRAME_OF_REFERENCE)
    for uid, refs in frames.items():
        groups.append((TARGET_FRAME_OF_REFERENCE, uid, Problem(
            "frame-of-reference-unknown",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} {refs[0].path} references frame of reference {uid}, "
            f"which no object of the set has{_elsewhere(len(refs) - 1)}",
        )))
    return groups


def _reference_problems(graph: ReferenceGraph, optional_kinds: frozenset[str]) -> list[Problem]:
    """Instance, series and frame-of-reference references that lead nowhere in the set."""
    problems: list[Problem] = []
    present: dict[str, Mapping[str, object]] = {
        TARGET_INSTANCE: graph.nodes,
        TARGET_SERIES: graph.by_series,
        TARGET_FRAME_OF_REFERENCE: graph.by_frame_of_reference,
    }
    for node in graph.nodes.values():
        problems.extend(
            problem
            for target, uid, problem in reference_groups(node, optional_kinds)
            if uid not in present[target]
        )
    for node in graph.duplicates:
        problems.append(
            Problem(
                "duplicate-instance",
                node.sop_instance_uid,
                node.modality,
                f"{_label(node)} appears more than once in the set",
            )
        )
    return problems


def declared_frames(node: ObjectNode) -> list[Reference]:
    """The frames of reference a structure set declares (its references of kind
    ``referenced-frame-of-reference``); none for an object of another modality."""
    if node.modality != "RTSTRUCT":
        return []
    return [r for r in node.references if r.kind == "referenced-frame-of-reference"]


def declared_reason(source_modality: str, source_uid: str, path: str, expected: str) -> str:
    """Why ``expected`` is the set's frame of reference: a structure set declares it."""
    return f"but {label(source_modality, source_uid)} {path} declares {expected}"


def common_reason(count: int, expected: str) -> str:
    """Why ``expected`` is the set's frame of reference: ``count`` objects have it."""
    return f"while {count} other object{'s' if count > 1 else ''} of the set have {expected}"


def frame_mismatch(uid: str, modality: str, frame: str | None, reason: str) -> Problem:
    """An object whose FrameOfReferenceUID ``frame`` is not the set's, and why."""
    return Problem(
        "frame-of-reference-mismatch",
        uid,
        modality,
        f"{label(modality, uid)} has FrameOfReferenceUID {frame}, {reason}",
    )


def _frame_of_reference_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects whose FrameOfReferenceUID is not the one of the set: the one the structure
    set declares (its ReferencedFrameOfReferenceSequence) or else the most common one."""
    declared = [
        (node, reference)
        for node in graph.nodes.values()
        for reference in declared_frames(node)
    ]
    holders = [n for n in graph.nodes.values() if n.frame_of_reference_uid is not None]
    if declared:
        expected, _ = _principal(reference.uid for _, reference in declared)
        source, path = next((n, r.path) for n, r in declared if r.uid == expected)
        reason = declared_reason(source.modality, source.sop_instance_uid, path, expected)
    elif holders:
        expected, count = _principal(n.frame_of_reference_uid or "" for n in holders)
        reason = common_reason(count, expected)
    else:
        return []
    return [
        frame_mismatch(node.sop_instance_uid, node.modality, node.frame_of_reference_uid,
                       reason)
        for node in holders
        if node.frame_of_reference_uid != expected
    ]


def object_study_mismatch(uid: str, modality: str, study_uid: str, count: int,
                          study: str) -> Problem:
    """An object of another study than the ``count`` objects of the set's ``study``."""
    return Problem(
        "study-mismatch",
        uid,
        modality,
        f"{label(modality, uid)} belongs to study {study_uid}, while {count} other "
        f"object{'s' if count > 1 else ''} of the set belong to study {study}",
    )


def study_references(node: ObjectNode) -> list[Reference]:
    """The references of ``node`` naming a study (kind ``referenced-study``)."""
    return [r for r in node.references if r.kind == "referenced-study"]


def reference_study_mismatch(node: ObjectNode, reference: Reference, study: str) -> Problem:
    """A reference of ``node`` to another study than the set's ``study``."""
    return Problem(
        "study-mismatch",
        node.sop_instance_uid,
        node.modality,
        f"{_label(node)} {reference.path} references study {reference.uid}, "
        f"while the set belongs to study {study}",
    )


def _study_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects, and study references, outside the study most objects belong to."""
    if not graph.nodes:
        return []
    study, count = _principal(node.study_uid for node in graph.nodes.values())
    problems = [
        object_study_mismatch(node.sop_instance_uid, node.modality, node.study_uid, count,
                              study)
        for node in graph.nodes.values()
        if node.study_uid != study
    ]
    for node in graph.nodes.values():
        for reference in study_references(node):
            if reference.uid != study:
                problems.append(reference_study_mismatch(node, reference, study))
    return problems


def patient_mismatch(uid: str, modality: str, count: int) -> Problem:
    """An object of another patient than the ``count`` objects of the set's patient (the
    PatientID itself is never shown)."""
    return Problem(
        "patient-mismatch",
        uid,
        modality,
        f"{label(modality, uid)} has another PatientID than the {count} other "
        f"object{'s' if count > 1 else ''} of the set",
    )


def _patient_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects of another patient than most objects (compared by PatientID, never shown)."""
    if not graph.nodes:
        return []
    patient, count = _principal(node.patient_id for node in graph.nodes.values())
    return [
        patient_mismatch(node.sop_instance_uid, node.modality, count)
        for node in graph.nodes.values()
        if node.patient_id != patient
    ]


def check_set(
    graph: ReferenceGraph, *, optional_kinds: frozenset[str] = OPTIONAL_KINDS
) -> list[Problem]:
    """Every problem of a set, sorted: dangling instance references (``missing-instance``;
    kinds in ``optional_kinds`` may dangle), series and frames of reference referenced but
    absent, duplicated instances, objects off the set's frame of reference, study or
    patient."""
    problems = _reference_problems(graph, optional_kinds)
    problems += _frame_of_reference_problems(graph)
    problems += _study_problems(graph)
    problems += _patient_problems(graph)
    return sort_problems(problems)


# The objects an RT set holds: CT images (at least one), and exactly one of each RT object.
RT_SET_MODALITIES = ("RTSTRUCT", "RTPLAN", "RTDOSE")


def missing_object(modality: str) -> Problem:
    """The set holds no object of ``modality`` (CT images or one of the RT objects)."""
    what = "CT image" if modality == "CT" else modality
    return Problem("missing-object", "", modality, f"the set holds no {what}")


def too_many_objects(modality: str, uids: Iterable[str]) -> Problem:
    """The set holds several objects of ``modality`` where one is expected."""
    listed = sorted(uids)
    return Problem(
        "too-many-objects",
        "",
        modality,
        f"the set holds {len(listed)} {modality} objects where one is expected: "
        f"{', '.join(listed)}",
    )


def _count_problems(graph: ReferenceGraph) -> list[Problem]:
    counts = graph.counts()
    problems: list[Problem] = []
    if not counts.get("CT"):
        problems.append(missing_object("CT"))
    for modality in RT_SET_MODALITIES:
        found = graph.of_modality(modality)
        if not found:
            problems.append(missing_object(modality))
        elif len(found) > 1:
            problems.append(too_many_objects(modality, (n.sop_instance_uid for n in found)))
    return problems


@dataclass(frozen=True, slots=True)
class Link:
    """A link an RT object of ``modality`` must make: one of its references of ``kinds``
    to an object of the set of modality ``target``. When ``only_if_target`` holds, it is
    missing only while the set holds some object of ``target`` (else the missing object is
    what is reported)."""

    modality: str
    kinds: frozenset[str]
    target: str
    target_name: str
    only_if_target: bool


LINKS = {
    "RTPLAN": Link("RTPLAN", frozenset({"structure-set"}), "RTSTRUCT", "RTSTRUCT", True),
    "RTDOSE": Link("RTDOSE", frozenset({"rt-plan"}), "RTPLAN", "RTPLAN", True),
    "RTSTRUCT": Link("RTSTRUCT", frozenset({"contour-image", "referenced-series-image"}),
                     "CT", "CT image", False),
}


def link_candidates(node: ObjectNode) -> tuple[Link, list[str]] | None:
    """The link ``node`` must make and the UIDs (distinct, in order) that would make it;
    None for an object that needs no link."""
    link = LINKS.get(node.modality)
    if link is None:
        return None
    uids = dict.fromkeys(r.uid for r in node.references if r.kind in link.kinds)
    return link, list(uids)


def missing_link(uid: str, modality: str) -> Problem:
    """An RT object of ``modality`` that makes none of the links it must."""
    return Problem(
        "missing-link",
        uid,
        modality,
        f"{label(modality, uid)} references no {LINKS[modality].target_name} of the set",
    )


def _link_problems(graph: ReferenceGraph) -> list[Problem]:
    """RTPLAN -> RTSTRUCT, RTDOSE -> RTPLAN and RTSTRUCT -> CT links within the set."""
    problems: list[Problem] = []
    nodes = graph.nodes
    counts = graph.counts()
    for node in nodes.values():
        found = link_candidates(node)
        if found is None:
            continue
        link, uids = found
        if link.only_if_target and not counts.get(link.target):
            continue  # already reported as a missing object
        if not any(uid in nodes and nodes[uid].modality == link.target for uid in uids):
            problems.append(missing_link(node.sop_instance_uid, node.modality))
    return problems


def check_rt_set(
    graph: ReferenceGraph, *, optional_kinds: frozenset[str] = OPTIONAL_KINDS
) -> list[Problem]:
    """:func:`check_set` plus the radiotherapy rules: at least one CT image, exactly one
    RTSTRUCT, RTPLAN and RTDOSE (``missing-object``/``too-many-objects``), and the links
    RTPLAN -> RTSTRUCT, RTDOSE -> RTPLAN, RTSTRUCT -> CT images inside the set
    (``missing-link``)."""
    problems = check_set(graph, optional_kinds=optional_kinds)
    problems += _count_problems(graph)
    problems += _link_problems(graph)
    return sort_problems(problems)
