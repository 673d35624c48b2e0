"""The de-identification engine: one DICOM object in, one de-identified object out.

The engine applies a :class:`~shared.deid.rules.RuleSet` to every element at every depth
of the data set. Elements whose action is "keep" are copied as byte ranges of the input
(runs of consecutive kept elements in one copy), so pixel data and anything untouched
leaves exactly as it came, in the object's own transfer syntax. The file meta is written
afresh and follows the data set (Media Storage SOP Instance UID = new SOP Instance UID).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.deid.context import ObjectContext, Pseudonyms
from shared.deid.rules import (
    REMOVE,
    Action,
    ActionResult,
    Addition,
    AppendItems,
    Kind,
    Outcome,
    RuleSet,
    SequenceItems,
    TextTreatment,
    Typed,
)
from shared.dicom import encode
from shared.dicom.errors import Malformed
from shared.dicom.output import Buffer, Encoded, Piece, Span
from shared.dicom.parse import (
    FIRST_DATA_SET_GROUP,
    UNDEFINED_LENGTH,
    DicomObject,
    Element,
    Item,
    Syntax,
    dictionary_vr,
    parse,
)
from shared.dicom.uids import UidMapper
from shared.dicom.values import plausible

PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_NAME = 0x00100010
STUDY_DATE = 0x00080020
ACCESSION_NUMBER = 0x00080050
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
MODALITY = 0x00080060

# Free-text and name VRs, the ones a D or C action on an enclosing sequence rewrites.
_DUMMY_TEXT_VRS = frozenset({"PN", "ST", "LT", "UT", "UC"})
_CLEAN_TEXT_VRS = _DUMMY_TEXT_VRS | frozenset({"LO", "SH"})
DUMMY_TEXT = "ANONYMIZED"
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                         "ST", "TM", "UC", "UI", "UR", "UT"})


class NeedsIntegers(Exception):
    """Counter values the rules need that the caller has not supplied yet."""

    def __init__(self, keys: set[tuple[str, str]]) -> None:
        super().__init__(f"{len(keys)} counter values to allocate")
        self.keys = keys


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    """The original identifiers that select an object's pseudonyms in the PHI index."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    study_instance_uid: str
    study_date: str
    accession_number: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    modality: str


@dataclass(frozen=True, slots=True)
class Deidentified:
    """A de-identified object (PS3.10, as the pieces it was written from) and the
    identifiers it now carries."""

    encoded: Encoded
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    study_date: str

    @property
    def data(self) -> bytes:
        """The object's bytes in one buffer (joined at the first call)."""
        return self.encoded.tobytes()

    @property
    def size(self) -> int:
        return self.encoded.size


def identity(obj: DicomObject) -> ObjectIdentity:
    """Read the identifiers needed before de-identification (values are PHI: keep them
    out of logs)."""
    get = obj.get_text
    name = obj.dataset.elements.get(PATIENT_NAME)
    return ObjectIdentity(
        # IDs are compared byte for byte (read as Latin-1, which keeps every byte); the
        # name is kept for people to read, so it is decoded with its character set.
        patient_id=get(PATIENT_ID) or "",
        issuer_of_patient_id=get(ISSUER_OF_PATIENT_ID) or "",
        patient_name=ObjectContext.for_reading(obj).text(name) if name else "",
        study_instance_uid=get(STUDY_INSTANCE_UID) or "",
        study_date=get(STUDY_DATE) or "",
        accession_number=get(ACCESSION_NUMBER) or "",
        sop_class_uid=get(SOP_CLASS_UID) or "",
        sop_instance_uid=get(SOP_INSTANCE_UID) or "",
        series_instance_uid=get(SERIES_INSTANCE_UID) or "",
        modality=get(MODALITY) or "",
    )


def _index_value(ctx: ObjectContext, element: Element, value: ActionResult) -> ActionResult:
    """``value``, the rule's replacement of ``element``, or the PHI index's replacement
    when the element holds a value the index already maps (see ``Pseudonyms.known_uids``).
    Only a replacement is replaced: a rule that keeps, empties or removes still does."""
    if element.vr == "UI":
        known = ctx.known_uids
    elif element.tag == ACCESSION_NUMBER:
        known = ctx.known_accessions
    else:
        return value
    if not known or not isinstance(value, str) or not value or element.items is not None:
        return value
    originals = [part.strip(" \x00") for part in ctx.text(element).split("\\")]
    if not any(part in known for part in originals):
        return value
    produced = value.split("\\")
    if len(originals) == 1:
        return known[originals[0]]
    if len(produced) != len(originals):
        return value
    return "\\".join(known.get(o, p) for o, p in zip(originals, produced, strict=True))


class Engine:
    """Applies one rule set with one site secret; safe to reuse for many objects."""

    def __init__(self, rules: RuleSet, secret: bytes) -> None:
        self.rules = rules
        self.uids = UidMapper(secret)
        self._additions = sorted(rules.additions, key=lambda a: a.tag)

    @staticmethod
    def read(data: Buffer) -> DicomObject:
        """Parse and validate an object; raises :class:`RejectedObject` with the reason."""
        return parse(data)

    def deidentify(
        self,
        obj: DicomObject,
        pseudonyms: Pseudonyms,
        integers: dict[tuple[str, str], int] | None = None,
    ) -> Deidentified:
        """De-identify a parsed object with the pseudonyms of its patient and study.

        Rules that number values with counters (CTP ``@integer``) read them from
        ``integers``; when one is missing, :class:`NeedsIntegers` lists every missing key
        so the caller can allocate them all in the index and try again.
        """
        ctx = ObjectContext(obj, pseudonyms, self.uids, integers if integers is not None else {},
                            known_uids=dict(pseudonyms.known_uids),
                            known_accessions=dict(pseudonyms.known_accessions))
        out: list[Piece] = []
        self._item(ctx, obj.dataset, obj.syntax, TextTreatment.NONE, out, top=True)
        if ctx.missing_integers:
            raise NeedsIntegers(ctx.missing_integers)
        sop_class = obj.get_text(SOP_CLASS_UID) or ""
        new_sop = self._new_value(ctx, SOP_INSTANCE_UID)
        if not new_sop:
            raise Malformed("the profile removed the SOP Instance UID")
        encoded = encode.part10(sop_class, new_sop, obj.transfer_syntax_uid, obj.buffer, out)
        return Deidentified(
            encoded=encoded,
            patient_id=self._new_value(ctx, PATIENT_ID),
            study_instance_uid=self._new_value(ctx, STUDY_INSTANCE_UID),
            series_instance_uid=self._new_value(ctx, SERIES_INSTANCE_UID),
            sop_instance_uid=new_sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=obj.transfer_syntax_uid,
            modality=obj.get_text(MODALITY) or "",
            study_date=self._new_value(ctx, STUDY_DATE),
        )

    def _new_value(self, ctx: ObjectContext, tag: int) -> str:
        """The value a top-level element has in the output."""
        element = ctx.obj.dataset.elements.get(tag)
        for addition in self.rules.additions:
            if addition.tag == tag and (element is None or not addition.only_if_absent):
                added = addition.value(ctx)
                return added if isinstance(added, str) else ""
        if element is None:
            return ""
        action = self.rules.action(tag, element.vr)
        if action.kind in (Kind.KEEP, Kind.COPY):
            return ctx.text(element)
        if action.kind is Kind.REPLACE:
            value = _index_value(ctx, element, action.compute(ctx, element))
            if value is Outcome.KEEP:
                return ctx.text(element)
            if isinstance(value, Typed):
                return value.value
            if isinstance(value, bytes):
                return value.decode("latin-1").rstrip(" \x00")
            return value.rstrip(" \x00") if isinstance(value, str) else ""
        return ""

    def _private_action(self, item: Item, tag: int, ctx: ObjectContext) -> Action:
        rules = self.rules
        scripted = rules.by_tag.get(tag)
        if scripted is not None:
            return scripted
        return self._private_by_creator(item, tag, ctx) or rules.private

    def _private_by_creator(self, item: Item, tag: int, ctx: ObjectContext) -> Action | None:
        """The action a rule names for exactly this private element (by its block's
        creator), None when no rule does."""
        rules = self.rules
        if rules.private_by_creator is not None:
            low = tag & 0xFFFF
            if 0x0010 <= low <= 0x00FF:
                creator_tag = tag
            elif low >= 0x1000:
                creator_tag = (tag & 0xFFFF0000) | (low >> 8)
            else:
                return None
            creator_element = item.elements.get(creator_tag)
            creator = ctx.text(creator_element).strip() if creator_element else None
            return rules.private_by_creator(tag, creator)
        return None

    def _kept_exactly(self, item: Item, tag: int, ctx: ObjectContext) -> bool:
        """Whether a rule names this very element (not a group, VR or default rule)."""
        if tag in self.rules.by_tag:
            return True
        return bool(tag & 0x10000) and self._private_by_creator(item, tag, ctx) is not None

    def _item(
        self,
        ctx: ObjectContext,
        item: Item,
        syntax: Syntax,
        treatment: TextTreatment,
        out: list[Piece],
        top: bool = False,
    ) -> None:
        buf = ctx.obj.buffer
        action_of = self.rules.action
        string_vrs = _STRING_VRS
        keep, copy, remove = Kind.KEEP, Kind.COPY, Kind.REMOVE
        plain = treatment is TextTreatment.NONE
        additions = self._additions if top else []
        next_add = 0
        run_start = run_end = -1
        for tag, element in item.elements.items():
            if next_add < len(additions) and additions[next_add].tag <= tag:
                if run_start >= 0:
                    out.append(Span(run_start, run_end))
                    run_start = -1
                replaced = False
                while next_add < len(additions) and additions[next_add].tag <= tag:
                    addition = additions[next_add]
                    next_add += 1
                    if addition.tag == tag and addition.only_if_absent:
                        continue
                    replaced |= addition.tag == tag
                    self._add(ctx, addition, syntax, out)
                if replaced:
                    continue
            action: Action
            vr = element.vr
            if tag < FIRST_DATA_SET_GROUP:
                # File meta and command elements never travel inside a data set: the file
                # meta is always written afresh.
                action = REMOVE
            elif tag & 0x10000:
                action = self._private_action(item, tag, ctx)
            else:
                action = action_of(tag, vr)
            kind = action.kind
            if element.opaque:
                if not (kind in (copy, keep) and self._kept_exactly(item, tag, ctx)
                        and dictionary_vr(tag) != "SQ"):
                    # An uninterpretable value may hide anything: no rule can be applied to
                    # what it holds, so it goes unless a rule keeps exactly this element
                    # (and it is not a sequence, whose rule means "apply the rules inside").
                    action, kind = REMOVE, remove
            elif (
                vr in string_vrs and kind is not remove and element.length != UNDEFINED_LENGTH
                and not plausible(vr, buf, element.value, element.value + element.length,
                                  kind is keep or kind is copy)
            ):
                # Control bytes (the next elements swallowed by a wrong length), or a value
                # kept as it is that is not what its VR says (a date that is no date).
                action, kind = REMOVE, remove
            if kind is copy or (kind is keep and element.items is None and (
                plain or vr not in _CLEAN_TEXT_VRS
            )):
                if element.relabelled:
                    # Kept, but under the VR it really has: a reader must not see a UID as
                    # a date, nor a date as bytes.
                    if run_start >= 0:
                        out.append(Span(run_start, run_end))
                        run_start = -1
                    out.append(encode.element(tag, vr, bytes(ctx.obj.raw(element)), syntax))
                    continue
                if run_start < 0:
                    run_start = element.start
                run_end = element.end
                continue
            if run_start >= 0:
                out.append(Span(run_start, run_end))
                run_start = -1
            if kind is not remove:
                self._apply(ctx, element, action, syntax, treatment, out)
        if run_start >= 0:
            out.append(Span(run_start, run_end))
        for addition in additions[next_add:]:
            self._add(ctx, addition, syntax, out)

    def _apply(
        self,
        ctx: ObjectContext,
        element: Element,
        action: Action,
        syntax: Syntax,
        treatment: TextTreatment,
        out: list[Piece],
    ) -> None:
        kind = action.kind
        tag, vr = element.tag, element.vr
        if kind is Kind.REMOVE:
            return
        if kind is Kind.EMPTY:
            out.append(encode.header(tag, vr, 0, syntax))
            return
        if kind is Kind.REPLACE:
            value = _index_value(ctx, element, action.compute(ctx, element))
            self._replace(ctx, element, value, syntax, out)
            return
        if kind is Kind.SEQUENCE and element.items is None:
            # The rules treat it as a sequence but its value is not items (a sequence sent
            # under another VR): what it holds cannot be de-identified, so it is removed.
            return
        if element.items is not None:
            inner = action.treatment if kind is Kind.SEQUENCE else treatment
            if inner is TextTreatment.NONE:
                inner = treatment
            self._sequence(ctx, element, syntax, inner, out)
            return
        if treatment is TextTreatment.NONE and kind is Kind.SEQUENCE:
            treatment = action.treatment
        dummy = treatment is TextTreatment.DUMMY and vr in _DUMMY_TEXT_VRS
        if dummy or (treatment is TextTreatment.CLEAN and vr == "PN"):
            out.append(encode.text_element(tag, vr, DUMMY_TEXT, syntax))
        elif treatment is TextTreatment.CLEAN and vr in _CLEAN_TEXT_VRS:
            cleaned = ctx.encode(ctx.clean_text(ctx.text(element)), vr)
            out.append(encode.element(tag, vr, cleaned, syntax))
        else:
            out.append(Span(element.start, element.end))

    def _replace(
        self,
        ctx: ObjectContext,
        element: Element,
        value: ActionResult,
        syntax: Syntax,
        out: list[Piece],
    ) -> None:
        tag, vr = element.tag, element.vr
        if value is None:
            return
        if element.items is not None and isinstance(value, (str, bytes, Typed)):
            # A value computed for a sequence (a text rule on a tag whose value is items):
            # neither the items nor a text can go out under it; the element is removed.
            return
        if isinstance(value, str):
            out.append(encode.element(tag, vr, ctx.encode(value, vr), syntax))
        elif isinstance(value, bytes):
            out.append(encode.element(tag, vr, value, syntax))
        elif isinstance(value, AppendItems):
            same_encoding = (element.item_syntax or syntax) == syntax
            kept = [bytes(ctx.obj.buffer[i.start : i.end]) for i in element.items or ()]
            if not same_encoding:
                kept = self._reencoded_items(ctx, element, syntax)
            self._items(ctx, tag, value.items, syntax, out, kept)
        elif isinstance(value, Typed):
            out.append(encode.element(tag, value.vr, ctx.encode(value.value, value.vr), syntax))
        elif value is Outcome.KEEP:
            out.append(Span(element.start, element.end))
        elif value is Outcome.PROCESS:
            if element.items is None:
                out.append(Span(element.start, element.end))
            else:
                self._sequence(ctx, element, syntax, TextTreatment.NONE, out)
        else:
            self._items(ctx, tag, value, syntax, out)

    def _reencoded_items(
        self, ctx: ObjectContext, element: Element, syntax: Syntax
    ) -> list[bytes]:
        """Items encoded in another syntax (a UN sequence's implicit VR items), written
        again in ``syntax`` element by element, so new items can be appended after them."""
        out: list[bytes] = []
        self._write_reencoded(ctx, element.items or [], syntax, out)
        return [b"".join(out)]

    def _write_reencoded(
        self, ctx: ObjectContext, items: list[Item], syntax: Syntax, out: list[bytes],
    ) -> None:
        for item in items:
            out.append(encode.item_start(syntax))
            for tag, element in item.elements.items():
                if element.items is not None:
                    out.append(encode.sequence_start(tag, "SQ", syntax))
                    self._write_reencoded(ctx, element.items, syntax, out)
                    out.append(encode.sequence_end(syntax))
                elif element.length != UNDEFINED_LENGTH:
                    vr = "UN" if element.opaque else element.vr
                    out.append(encode.element(tag, vr, bytes(ctx.obj.raw(element)), syntax))
            out.append(encode.item_end(syntax))

    def _sequence(
        self,
        ctx: ObjectContext,
        element: Element,
        syntax: Syntax,
        treatment: TextTreatment,
        out: list[Piece],
    ) -> None:
        item_syntax = element.item_syntax or syntax
        # Items in another encoding than the data set (a sequence received as UN) stay in
        # theirs, under a UN header of undefined length as PS3.5 6.2.2 requires.
        vr = "SQ" if item_syntax == syntax else "UN"
        out.append(encode.sequence_start(element.tag, vr, syntax))
        for item in element.items or ():
            out.append(encode.item_start(item_syntax))
            ctx.items.append(item)
            try:
                self._item(ctx, item, item_syntax, treatment, out)
            finally:
                ctx.items.pop()
            out.append(encode.item_end(item_syntax))
        out.append(encode.sequence_end(item_syntax))

    def _add(
        self, ctx: ObjectContext, addition: Addition, syntax: Syntax,
        out: list[Piece],
    ) -> None:
        value = addition.value(ctx)
        if value is None:
            return
        if isinstance(value, str):
            out.append(encode.element(addition.tag, addition.vr,
                                      ctx.encode(value, addition.vr), syntax))
        else:
            self._items(ctx, addition.tag, value, syntax, out)

    @staticmethod
    def _items(
        ctx: ObjectContext,
        tag: int,
        items: SequenceItems,
        syntax: Syntax,
        out: list[Piece],
        kept: list[bytes] | None = None,
    ) -> None:
        """Write a sequence of new items made of text elements, after ``kept`` items
        copied as they were."""
        out.append(encode.sequence_start(tag, "SQ", syntax))
        out.extend(kept or ())
        for fields in items:
            out.append(encode.item_start(syntax))
            for item_tag, vr, text in fields:
                out.append(encode.element(item_tag, vr, ctx.encode(text, vr), syntax))
            out.append(encode.item_end(syntax))
        out.append(encode.sequence_end(syntax))
