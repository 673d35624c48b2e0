"""The reference graph of a set of DICOM objects (radiotherapy sets in particular).

Each parsed object becomes an :class:`ObjectNode` carrying its identity (SOP instance,
study, series, frame of reference, patient) and every reference it makes to another
object, study, series or frame of reference, with the sequence path where the reference
sits. References are collected by one walk over the sequences of the object's structural
index, so graphing a few hundred objects costs milliseconds. :class:`ReferenceGraph`
indexes the nodes and answers which references dangle and who refers to what.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from pydicom.datadict import keyword_for_tag

from shared.dicom.parse import DicomObject, Item

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
MODALITY = 0x00080060
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
FRAME_OF_REFERENCE_UID = 0x00200052
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155
REFERENCED_FRAME_OF_REFERENCE_UID = 0x30060024

REFERENCED_STUDY_SEQUENCE = 0x00081110
REFERENCED_SERIES_SEQUENCE = 0x00081115
REFERENCED_PATIENT_SEQUENCE = 0x00081120
REFERENCED_IMAGE_SEQUENCE = 0x00081140
REFERENCED_INSTANCE_SEQUENCE = 0x0008114A
SOURCE_IMAGE_SEQUENCE = 0x00082112
REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = 0x30060010
RT_REFERENCED_STUDY_SEQUENCE = 0x30060012
RT_REFERENCED_SERIES_SEQUENCE = 0x30060014
CONTOUR_IMAGE_SEQUENCE = 0x30060016
STRUCTURE_SET_ROI_SEQUENCE = 0x30060020
ROI_CONTOUR_SEQUENCE = 0x30060039
CONTOUR_SEQUENCE = 0x30060040
REFERENCED_RT_PLAN_SEQUENCE = 0x300C0002
REFERENCED_REFERENCE_IMAGE_SEQUENCE = 0x300C0042
REFERENCED_STRUCTURE_SET_SEQUENCE = 0x300C0060
REGISTRATION_SEQUENCE = 0x00700308
ORIGINAL_ATTRIBUTES_SEQUENCE = 0x04000561

# Detached patient/study management SOP classes (PS3.4, retired): a "reference" with one of
# these classes names a patient or a study, not a stored instance.
MANAGEMENT_CLASS_PREFIX = "1.2.840.10008.3.1.2."
STUDY_MANAGEMENT_CLASS_PREFIX = "1.2.840.10008.3.1.2.3."
PATIENT_MANAGEMENT_CLASS_PREFIX = "1.2.840.10008.3.1.2.1."

# Sequences whose items hold history, not live references.
_SKIPPED_SEQUENCES = frozenset({ORIGINAL_ATTRIBUTES_SEQUENCE})

# Kind of an instance reference by the sequence that holds it.
_INSTANCE_KINDS = {
    REFERENCED_STRUCTURE_SET_SEQUENCE: "structure-set",
    REFERENCED_RT_PLAN_SEQUENCE: "rt-plan",
    SOURCE_IMAGE_SEQUENCE: "source-image",
    REFERENCED_IMAGE_SEQUENCE: "referenced-image",
    REFERENCED_INSTANCE_SEQUENCE: "referenced-instance",
    REFERENCED_REFERENCE_IMAGE_SEQUENCE: "reference-image",
}

TARGET_INSTANCE = "instance"
TARGET_FRAME_OF_REFERENCE = "frame-of-reference"
TARGET_STUDY = "study"
TARGET_SERIES = "series"


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference an object makes: what it points at (``target``: instance,
    frame-of-reference, study or series), the referenced ``uid``, a short ``kind`` naming
    the relation (e.g. ``contour-image``, ``structure-set``, ``rt-plan``), the ``path`` of
    sequence items where it sits, and the referenced SOP class when the object states one."""

    kind: str
    uid: str
    path: str
    target: str
    sop_class_uid: str = ""


@dataclass(frozen=True, slots=True)
class ObjectNode:
    """The identity of one object and the references it makes. ``frame_of_reference_uid``
    is None when the object has none; patient name and ID are kept for grouping only and
    must not be copied into reports."""

    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    patient_id: str
    patient_name: str
    references: tuple[Reference, ...] = ()


def node_to_json(node: ObjectNode) -> str:
    """The node as JSON (as the index keeps it in ``rt_object.node``)."""
    return json.dumps(asdict(node))


def node_from_json(text: str) -> ObjectNode:
    """The node of :func:`node_to_json`'s text."""
    return node_from_data(json.loads(text))


_NODE_TEXT = ("sop_instance_uid", "sop_class_uid", "modality", "study_uid", "series_uid",
              "patient_id", "patient_name")
_REFERENCE_TEXT = ("kind", "uid", "path", "target", "sop_class_uid")


def node_from_data(data: object) -> ObjectNode:
    """The node of ``asdict(node)`` as JSON decoded it (a node sent in a message): raises
    ValueError unless every field is there with its type, and nothing else is."""
    if not isinstance(data, dict) or set(data) != {*_NODE_TEXT, "frame_of_reference_uid",
                                                   "references"}:
        raise ValueError("not a node")
    frame = data["frame_of_reference_uid"]
    references = data["references"]
    if (not all(isinstance(data[name], str) for name in _NODE_TEXT)
            or not (frame is None or isinstance(frame, str))
            or not isinstance(references, list)):
        raise ValueError("not a node")
    for reference in references:
        if (not isinstance(reference, dict) or set(reference) != set(_REFERENCE_TEXT)
                or not all(isinstance(v, str) for v in reference.values())):
            raise ValueError("not a reference")
    return ObjectNode(**{name: data[name] for name in _NODE_TEXT},
                      frame_of_reference_uid=frame,
                      references=tuple(Reference(**r) for r in references))


_keywords: dict[int, str] = {}


def _keyword(tag: int) -> str:
    name = _keywords.get(tag)
    if name is None:
        name = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        _keywords[tag] = name
    return name


def _path(steps: list[tuple[int, int]]) -> str:
    return " > ".join(f"{_keyword(tag)}[{index}]" for tag, index in steps)


def _instance_kind(steps: list[tuple[int, int]], sop_class: str) -> tuple[str, str]:
    """(kind, target) of a ReferencedSOPInstanceUID found in the item ``steps`` leads to."""
    if sop_class.startswith(MANAGEMENT_CLASS_PREFIX):
        if sop_class.startswith(STUDY_MANAGEMENT_CLASS_PREFIX):
            return "referenced-study", TARGET_STUDY
        if sop_class.startswith(PATIENT_MANAGEMENT_CLASS_PREFIX):
            return "referenced-patient", TARGET_STUDY
        return "referenced-management", TARGET_STUDY
    sequence = steps[-1][0]
    if sequence == CONTOUR_IMAGE_SEQUENCE:
        parents = {tag for tag, _ in steps[:-1]}
        if RT_REFERENCED_SERIES_SEQUENCE in parents:
            return "referenced-series-image", TARGET_INSTANCE
        return "contour-image", TARGET_INSTANCE
    if sequence in (REFERENCED_STUDY_SEQUENCE, RT_REFERENCED_STUDY_SEQUENCE):
        return "referenced-study", TARGET_STUDY
    return _INSTANCE_KINDS.get(sequence, "referenced-instance"), TARGET_INSTANCE


def _collect(
    obj: DicomObject, item: Item, steps: list[tuple[int, int]], out: list[Reference]
) -> None:
    """Append the references held by ``item`` (reached through ``steps``) and its items."""
    elements = item.elements
    if steps:
        sequence = steps[-1][0]
        if REFERENCED_SOP_INSTANCE_UID in elements:
            uid = obj.get_text(REFERENCED_SOP_INSTANCE_UID, item)
            if uid:
                sop_class = obj.get_text(REFERENCED_SOP_CLASS_UID, item) or ""
                kind, target = _instance_kind(steps, sop_class)
                out.append(Reference(kind, uid, _path(steps), target, sop_class))
        if sequence in (RT_REFERENCED_SERIES_SEQUENCE, REFERENCED_SERIES_SEQUENCE):
            uid = obj.get_text(SERIES_INSTANCE_UID, item)
            if uid:
                out.append(Reference("referenced-series", uid, _path(steps), TARGET_SERIES))
        if sequence in (REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, REGISTRATION_SEQUENCE):
            uid = obj.get_text(FRAME_OF_REFERENCE_UID, item)
            if uid:
                kind = (
                    "referenced-frame-of-reference"
                    if sequence == REFERENCED_FRAME_OF_REFERENCE_SEQUENCE
                    else "registered-frame-of-reference"
                )
                out.append(Reference(kind, uid, _path(steps), TARGET_FRAME_OF_REFERENCE))
        if REFERENCED_FRAME_OF_REFERENCE_UID in elements:
            uid = obj.get_text(REFERENCED_FRAME_OF_REFERENCE_UID, item)
            if uid:
                kind = (
                    "roi-frame-of-reference"
                    if sequence == STRUCTURE_SET_ROI_SEQUENCE
                    else "referenced-frame-of-reference"
                )
                out.append(Reference(kind, uid, _path(steps), TARGET_FRAME_OF_REFERENCE))
    for element in elements.values():
        items = element.items
        if items is None or element.tag in _SKIPPED_SEQUENCES:
            continue
        for index, child in enumerate(items):
            steps.append((element.tag, index))
            _collect(obj, child, steps, out)
            steps.pop()


def node_of(obj: DicomObject) -> ObjectNode:
    """The node of a parsed object: its identifying UIDs, modality, patient and every
    reference found in its sequences (history in OriginalAttributesSequence excepted)."""
    references: list[Reference] = []
    _collect(obj, obj.dataset, [], references)
    return ObjectNode(
        sop_instance_uid=obj.get_text(SOP_INSTANCE_UID) or "",
        sop_class_uid=obj.get_text(SOP_CLASS_UID) or "",
        modality=obj.get_text(MODALITY) or "",
        study_uid=obj.get_text(STUDY_INSTANCE_UID) or "",
        series_uid=obj.get_text(SERIES_INSTANCE_UID) or "",
        frame_of_reference_uid=obj.get_text(FRAME_OF_REFERENCE_UID) or None,
        patient_id=obj.get_text(PATIENT_ID) or "",
        patient_name=obj.get_text(PATIENT_NAME) or "",
        references=tuple(references),
    )


@dataclass
class ReferenceGraph:
    """Nodes indexed by SOP instance UID, study, series and frame of reference, with the
    reverse index of references. A second node with an already present SOP instance UID is
    kept in ``duplicates`` and otherwise ignored."""

    nodes: dict[str, ObjectNode] = field(default_factory=dict)
    by_study: dict[str, list[ObjectNode]] = field(default_factory=dict)
    by_series: dict[str, list[ObjectNode]] = field(default_factory=dict)
    by_frame_of_reference: dict[str, list[ObjectNode]] = field(default_factory=dict)
    duplicates: list[ObjectNode] = field(default_factory=list)
    _referrers: dict[str, list[tuple[ObjectNode, Reference]]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_objects(cls, objects: Iterable[DicomObject]) -> ReferenceGraph:
        """The graph of parsed objects."""
        return cls.from_nodes(node_of(obj) for obj in objects)

    @classmethod
    def from_nodes(cls, nodes: Iterable[ObjectNode]) -> ReferenceGraph:
        """The graph of already built nodes."""
        graph = cls()
        for node in nodes:
            graph.add(node)
        return graph

    def add(self, node: ObjectNode) -> None:
        """Add a node and index it and its references."""
        if node.sop_instance_uid in self.nodes:
            self.duplicates.append(node)
            return
        self.nodes[node.sop_instance_uid] = node
        self.by_study.setdefault(node.study_uid, []).append(node)
        self.by_series.setdefault(node.series_uid, []).append(node)
        if node.frame_of_reference_uid is not None:
            self.by_frame_of_reference.setdefault(node.frame_of_reference_uid, []).append(node)
        for reference in node.references:
            self._referrers.setdefault(reference.uid, []).append((node, reference))

    def dangling(self) -> list[tuple[ObjectNode, Reference]]:
        """Instance references whose target is not in the graph, in insertion order."""
        nodes = self.nodes
        return [
            (node, reference)
            for node in nodes.values()
            for reference in node.references
            if reference.target == TARGET_INSTANCE and reference.uid not in nodes
        ]

    def referenced_by(self, uid: str) -> list[tuple[ObjectNode, Reference]]:
        """The (node, reference) pairs that refer to ``uid``, whatever its target kind."""
        return list(self._referrers.get(uid, ()))

    def of_modality(self, modality: str) -> list[ObjectNode]:
        """The nodes of one modality, in insertion order."""
        return [node for node in self.nodes.values() if node.modality == modality]

    def counts(self) -> Mapping[str, int]:
        """Number of nodes per modality."""
        result: dict[str, int] = {}
        for node in self.nodes.values():
            result[node.modality] = result.get(node.modality, 0) + 1
        return result
