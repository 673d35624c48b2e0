"""Consistency checks of a set of objects and of a radiotherapy set.

:func:`check_set` verifies what any set handed on together must satisfy: references
resolve within the set, one frame of reference (the one the structure set declares), one
study, one patient. :func:`check_rt_set` adds the radiotherapy rules: CT images, one
structure set, one plan and one dose, linked image <- RTSTRUCT <- RTPLAN <- RTDOSE. Every
problem is reported, each with a precise detail naming UIDs, modalities and sequence paths
but never a patient name or ID, so that reports can be logged and shared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from shared.rt.graph import (
    TARGET_FRAME_OF_REFERENCE,
    TARGET_INSTANCE,
    TARGET_SERIES,
    ObjectNode,
    Reference,
    ReferenceGraph,
)

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


def _sort(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.code, p.modality, p.object_uid, p.detail))


def _label(node: ObjectNode) -> str:
    return f"{node.modality or 'object'} {node.sop_instance_uid}"


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


def _reference_problems(graph: ReferenceGraph, optional_kinds: frozenset[str]) -> list[Problem]:
    """Instance, series and frame-of-reference references that lead nowhere in the set."""
    problems: list[Problem] = []
    nodes, series, frames = graph.nodes, graph.by_series, graph.by_frame_of_reference
    for node in nodes.values():
        missing = _grouped(
            (
                r
                for r in node.references
                if r.target == TARGET_INSTANCE
                and r.kind not in optional_kinds
                and r.uid not in nodes
            ),
        )
        for uid, refs in missing.items():
            problems.append(
                Problem(
                    "missing-instance",
                    node.sop_instance_uid,
                    node.modality,
                    f"{_label(node)} {refs[0].path} references {_target_name(refs[0])} {uid}, "
                    f"not in the set{_elsewhere(len(refs) - 1)}",
                )
            )
        missing_series = _grouped(
            r for r in node.references if r.target == TARGET_SERIES and r.uid not in series
        )
        for uid, refs in missing_series.items():
            problems.append(
                Problem(
                    "missing-series",
                    node.sop_instance_uid,
                    node.modality,
                    f"{_label(node)} {refs[0].path} references series {uid}, of which no "
                    f"object is in the set{_elsewhere(len(refs) - 1)}",
                )
            )
        unknown = _grouped(
            (
                r
                for r in node.references
                if r.target == TARGET_FRAME_OF_REFERENCE and r.uid not in frames
            ),
        )
        for uid, refs in unknown.items():
            problems.append(
                Problem(
                    "frame-of-reference-unknown",
                    node.sop_instance_uid,
                    node.modality,
                    f"{_label(node)} {refs[0].path} references frame of reference {uid}, "
                    f"which no object of the set has{_elsewhere(len(refs) - 1)}",
                )
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


def _frame_of_reference_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects whose FrameOfReferenceUID is not the one of the set: the one the structure
    set declares (its ReferencedFrameOfReferenceSequence) or else the most common one."""
    declared = [
        (node, reference)
        for node in graph.nodes.values()
        if node.modality == "RTSTRUCT"
        for reference in node.references
        if reference.kind == "referenced-frame-of-reference"
    ]
    holders = [n for n in graph.nodes.values() if n.frame_of_reference_uid is not None]
    if declared:
        expected, _ = _principal(reference.uid for _, reference in declared)
        source = next((n, r) for n, r in declared if r.uid == expected)
        reason = f"but {_label(source[0])} {source[1].path} declares {expected}"
    elif holders:
        expected, count = _principal(n.frame_of_reference_uid or "" for n in holders)
        reason = f"while {count} other object{'s' if count > 1 else ''} of the set have {expected}"
    else:
        return []
    return [
        Problem(
            "frame-of-reference-mismatch",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} has FrameOfReferenceUID {node.frame_of_reference_uid}, {reason}",
        )
        for node in holders
        if node.frame_of_reference_uid != expected
    ]


def _study_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects, and study references, outside the study most objects belong to."""
    if not graph.nodes:
        return []
    study, count = _principal(node.study_uid for node in graph.nodes.values())
    problems = [
        Problem(
            "study-mismatch",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} belongs to study {node.study_uid}, while {count} other "
            f"object{'s' if count > 1 else ''} of the set belong to study {study}",
        )
        for node in graph.nodes.values()
        if node.study_uid != study
    ]
    for node in graph.nodes.values():
        for reference in node.references:
            if reference.kind == "referenced-study" and reference.uid != study:
                problems.append(
                    Problem(
                        "study-mismatch",
                        node.sop_instance_uid,
                        node.modality,
                        f"{_label(node)} {reference.path} references study {reference.uid}, "
                        f"while the set belongs to study {study}",
                    )
                )
    return problems


def _patient_problems(graph: ReferenceGraph) -> list[Problem]:
    """Objects of another patient than most objects (compared by PatientID, never shown)."""
    if not graph.nodes:
        return []
    patient, count = _principal(node.patient_id for node in graph.nodes.values())
    return [
        Problem(
            "patient-mismatch",
            node.sop_instance_uid,
            node.modality,
            f"{_label(node)} has another PatientID than the {count} other "
            f"object{'s' if count > 1 else ''} of the set",
        )
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
    return _sort(problems)


def _count_problems(graph: ReferenceGraph) -> list[Problem]:
    counts = graph.counts()
    problems: list[Problem] = []
    if not counts.get("CT"):
        problems.append(Problem("missing-object", "", "CT", "the set holds no CT image"))
    for modality in ("RTSTRUCT", "RTPLAN", "RTDOSE"):
        found = graph.of_modality(modality)
        if not found:
            problems.append(Problem("missing-object", "", modality, f"the set holds no {modality}"))
        elif len(found) > 1:
            uids = ", ".join(sorted(node.sop_instance_uid for node in found))
            problems.append(
                Problem(
                    "too-many-objects",
                    "",
                    modality,
                    f"the set holds {len(found)} {modality} objects where one is expected: {uids}",
                )
            )
    return problems


def _link_problems(graph: ReferenceGraph) -> list[Problem]:
    """RTPLAN -> RTSTRUCT, RTDOSE -> RTPLAN and RTSTRUCT -> CT links within the set."""
    problems: list[Problem] = []
    nodes = graph.nodes
    links = (("RTPLAN", "structure-set", "RTSTRUCT"), ("RTDOSE", "rt-plan", "RTPLAN"))
    for modality, kind, target in links:
        targets = {n.sop_instance_uid for n in graph.of_modality(target)}
        if not targets:
            continue  # already reported as a missing object
        for node in graph.of_modality(modality):
            if not any(r.kind == kind and r.uid in targets for r in node.references):
                problems.append(
                    Problem(
                        "missing-link",
                        node.sop_instance_uid,
                        node.modality,
                        f"{_label(node)} references no {target} of the set",
                    )
                )
    for node in graph.of_modality("RTSTRUCT"):
        linked = any(
            r.kind in ("contour-image", "referenced-series-image")
            and r.uid in nodes
            and nodes[r.uid].modality == "CT"
            for r in node.references
        )
        if not linked:
            problems.append(
                Problem(
                    "missing-link",
                    node.sop_instance_uid,
                    node.modality,
                    f"{_label(node)} references no CT image of the set",
                )
            )
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
    return _sort(problems)
