"""Which objects a site accepts: RSNA CTP's DicomFilter script language, and the
Structured Report and Secondary Capture switches of the RSNA Anonymizer.

A script is a boolean expression over the object's element values::

    // CT or MR, but no scout images
    (Modality.equals("CT") + Modality.equals("MR"))
        * !ImageType.containsIgnoreCase("LOCALIZER")

Terms are ``Element.method("value")`` or the constants ``true.`` and ``false.`` (with
their dot). Operators, from loosest to tightest: ``+`` (or), ``*`` (and), ``!`` (not);
parentheses group. ``//`` starts a comment that runs to the end of the line; whitespace
and line breaks are free between tokens. A script with nothing but whitespace and
comments accepts every object (the RSNA Anonymizer skips an empty script the same way;
CTP's own DicomFilter, and the Anonymizer for a script of comments only, fail to parse
it and reject everything).

Elements are named as :func:`shared.deid.elements.element_ref` accepts them: DICOM
keywords, CTP's element names, tags (``[0008,0060]``, ``(0008,0060)``, ``00080060``),
private elements by creator (``0009[CREATOR]10``) and sequence paths (``A::B``, the first
item at each level). Methods: ``equals``, ``contains``, ``startsWith``, ``endsWith`` and
their ``IgnoreCase`` forms, ``matches`` (a regular expression that must match the whole
value), ``isLessThan`` and ``isGreaterThan`` (numeric).

Semantics follow CTP (``DicomObject.matches`` and its Tokenizer/Operator/Operand classes
in ``org/rsna/ctp/objects/DicomObject.java``): see
:func:`shared.deid.ctp_filter_methods.element_text` for the value a test sees and
:meth:`FilterScript.parse` for the methods. CTP quietly rejects every object when a script
does not parse; here such a script is refused when it is loaded, with its line, column and
the reason (:class:`FilterSyntaxError`).

This module holds the language's public face: the scripts (:class:`FilterScript`), the
acceptance rules applied to each object (:class:`ObjectFilter`) and their errors. The
parser and syntax tree are in :mod:`shared.deid.ctp_filter_syntax`, the values and methods
in :mod:`shared.deid.ctp_filter_methods`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from shared.deid.ctp_filter_methods import Values, element_text
from shared.deid.ctp_filter_syntax import Evaluator, Node, ParseError, Parser, compile_node, render
from shared.deid.elements import element_ref
from shared.dicom.errors import FilteredOut, IdentifyingPixels
from shared.dicom.parse import DicomObject

__all__ = [
    "STRUCTURED_REPORT_SOP_CLASSES",
    "FilterScript",
    "FilterSyntaxError",
    "ObjectFilter",
]

# ---------------------------------------------------------------------------------------
# Structured Report SOP classes
# ---------------------------------------------------------------------------------------

# CTP's SopClass.srSopClassUIDs, which the RSNA Anonymizer's "Remove Structured Report
# Files" switch tests (DicomObject.isSR). Key Object Selection (88.59) and Procedure Log
# (88.40) are not in it, and are not here either.
_CTP_SR_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.1", "1.2.840.10008.5.1.4.1.1.88.2",
    "1.2.840.10008.5.1.4.1.1.88.3", "1.2.840.10008.5.1.4.1.1.88.4",
    "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.88.35", "1.2.840.10008.5.1.4.1.1.88.50",
    "1.2.840.10008.5.1.4.1.1.88.65", "1.2.840.10008.5.1.4.1.1.88.67",
    "1.2.840.10008.5.1.4.1.1.88.68", "1.2.840.10008.5.1.4.1.1.88.69",
    "1.2.840.10008.5.1.4.1.1.88.70", "1.2.840.10008.5.1.4.1.1.88.71",
    "1.2.840.10008.5.1.4.1.1.88.72", "1.2.840.10008.5.1.4.1.1.88.73",
    "1.2.840.10008.5.1.4.1.1.88.74", "1.2.840.10008.5.1.4.1.1.88.75",
)

STRUCTURED_REPORT_SOP_CLASSES: frozenset[str] = frozenset(
    {
        str(uid)
        for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "SR Storage" in entry[0]
    }
    | set(_CTP_SR_SOP_CLASSES)
)
"""SOP classes the SR switch rejects: every storage SOP class of PS3.6 whose name has
"SR Storage" in it (the current and retired trial SR classes, dose and CAD reports, ...),
which includes all of CTP's list. Like CTP and the RSNA Anonymizer, Key Object Selection
and Procedure Log are not Structured Reports for this switch."""


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class FilterSyntaxError(ValueError):
    """A filter script that cannot be used; ``line`` and ``column`` (both from 1) say
    where, ``reason`` says what is wrong."""

    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(f"filter script line {line}, column {column}: {reason}")
        self.line = line
        self.column = column
        self.reason = reason


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


class FilterScript:
    """A parsed DicomFilter script, compiled once and evaluated for any number of objects."""

    __slots__ = ("_evaluate", "_root", "_text")

    def __init__(self, text: str, root: Node | None) -> None:
        self._text = text
        self._root = root
        self._evaluate: Evaluator | None = None if root is None else compile_node(root)

    @classmethod
    def parse(cls, text: str) -> FilterScript:
        """Parse and compile a script; raises :class:`FilterSyntaxError` with the line,
        column and reason of the first problem.

        Refused at load time (CTP would instead reject every object, or treat the term as
        false): unbalanced parentheses, a missing or dangling operator, anything that is
        not a term, an unknown element name or method, a missing quote, an invalid regular
        expression for ``matches``, a non-numeric or negative argument for ``isLessThan``
        and ``isGreaterThan``, and ``!!`` (which CTP evaluates as a single ``!``).

        Methods, as in CTP: ``equals``/``contains``/``startsWith``/``endsWith`` compare
        the value exactly, their ``IgnoreCase`` forms compare both sides lower-cased;
        ``matches`` is Java's ``String.matches`` (the whole value must match; Python
        ``re`` with ASCII classes stands in for ``java.util.regex``); ``isLessThan`` and
        ``isGreaterThan`` drop every character but digits and '.' from both sides and
        compare the numbers, and are false when the value gives no number (missing or
        empty element, text, several values such as ``1.5\\2.5``). The argument is the
        text between the quotes, backslashes included; it cannot hold a '"'.
        """
        try:
            root = Parser(text).script()
        except ParseError as exc:
            raise FilterSyntaxError(exc.line, exc.column, exc.reason) from None
        return cls(text, root)

    @property
    def text(self) -> str:
        """The script as written."""
        return self._text

    def matches(self, obj: DicomObject) -> bool:
        """Whether the script accepts ``obj`` (a blank script accepts everything)."""
        if self._evaluate is None:
            return True
        return self._evaluate(Values(obj))

    def describe(self) -> str:
        """The expression in a normalised form (no comments, one space around binary
        operators, parentheses only where needed) that parses back to the same script;
        it holds the script's own arguments but nothing read from any object."""
        return "true." if self._root is None else render(self._root)

    def __repr__(self) -> str:
        return f"FilterScript({self.describe()!r})"


_IMAGE_TYPE = element_ref("ImageType")
_SOP_CLASS_UID = 0x00080016
_MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
# Pixel content that identifies: text burned into the image, or a face (PS3.3 C.7.6.1).
_PIXEL_IDENTITY_FLAGS = {
    0x00280301: "Burned In Annotation",
    0x00280302: "Recognizable Visual Features",
}


def identifying_pixels(obj: DicomObject) -> str | None:
    """The name of the flag saying the pixels may identify the patient (Burned In
    Annotation or Recognizable Visual Features YES), None when neither says so."""
    for tag, name in _PIXEL_IDENTITY_FLAGS.items():
        value = obj.get_text(tag)
        if value is not None and value.strip(" \x00").upper() == "YES":
            return name
    return None


@dataclass(frozen=True)
class ObjectFilter:
    """The acceptance rules applied to each object before de-identification, as in the
    RSNA Anonymizer: the Structured Report and Secondary Capture switches (both on by
    default there) and an optional filter script.

    ``reject_structured_reports``: SOP Class UID in :data:`STRUCTURED_REPORT_SOP_CLASSES`.
    ``reject_secondary_captures``: ImageType contains ``SECONDARY`` anywhere in its text,
    case-insensitively (``DicomObject.isSecondaryCapture`` tests the joined value, not
    single values; the Secondary Capture SOP classes are not consulted), unless
    ``accept_reformatted`` and ImageType also contains ``REFORMATTED`` (the Anonymizer's
    "Accept Reformatted Images" switch, on by default).
    """

    script: FilterScript | None = None
    reject_structured_reports: bool = True
    reject_secondary_captures: bool = True
    accept_reformatted: bool = True
    # Pixel data is never cleaned: an object whose pixels may show identifying text or a
    # face is refused unless an operator accepts such objects knowingly.
    reject_identifying_pixels: bool = True

    def check(self, obj: DicomObject) -> None:
        """Raise :class:`FilteredOut` if ``obj`` is refused; the reason names the rule and
        never an element value. Rules apply in the Anonymizer's order: Secondary
        Capture, Structured Report, script; then burned-in annotation."""
        self._check_switches_and_script(obj)
        if self.reject_identifying_pixels:
            flag = identifying_pixels(obj)
            if flag is not None:
                raise IdentifyingPixels(
                    f"{flag} is YES: the pixel data may show identifying text or a face, "
                    "which is not cleaned; accept such objects knowingly with "
                    "--accept-burned-in-annotation (ACCEPT_BURNED_IN_ANNOTATION=true)"
                )

    def _check_switches_and_script(self, obj: DicomObject) -> None:
        if self.reject_secondary_captures:
            image_type = element_text(obj, _IMAGE_TYPE).upper()
            if "SECONDARY" in image_type and not (
                self.accept_reformatted and "REFORMATTED" in image_type
            ):
                raise FilteredOut(
                    "Secondary Capture (ImageType contains SECONDARY) rejected by the "
                    "secondary-capture switch"
                )
        if self.reject_structured_reports:
            sop_class = obj.get_text(_SOP_CLASS_UID)
            if sop_class is None:
                sop_class = obj.get_text(_MEDIA_STORAGE_SOP_CLASS_UID, obj.meta)
            sop_class = (sop_class or "").strip(" \x00")
            if sop_class in STRUCTURED_REPORT_SOP_CLASSES:
                raise FilteredOut(
                    f"Structured Report (SOP class {sop_class}) rejected by the SR switch"
                )
        if self.script is not None and not self.script.matches(obj):
            raise FilteredOut("not accepted by the filter script")
