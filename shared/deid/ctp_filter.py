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
in ``org/rsna/ctp/objects/DicomObject.java``): see :func:`element_text` for the value
a test sees and :meth:`FilterScript.parse` for the methods. CTP quietly rejects every
object when a script does not parse; here such a script is refused when it is loaded,
with its line, column and the reason (:class:`FilterSyntaxError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from pydicom.charset import decode_bytes
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from shared.deid.elements import ElementRef, UnknownElement, element_ref, encodings, find, value
from shared.dicom.errors import FilteredOut, IdentifyingPixels
from shared.dicom.parse import UNDEFINED_LENGTH, DicomObject

__all__ = [
    "STRUCTURED_REPORT_SOP_CLASSES",
    "FilterScript",
    "FilterSyntaxError",
    "ObjectFilter",
    "element_text",
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
# Values as CTP sees them
# ---------------------------------------------------------------------------------------

# dcm4che 1.4 (the toolkit under CTP) trims leading spaces as well as trailing spaces and
# NULs from these VRs; person names also lose trailing '^'.
_TRIMMED_BOTH_ENDS = frozenset({"AE", "CS", "DS", "IS", "LO", "SH"})
_FILE_META_GROUP = 0x0002


def element_text(
    obj: DicomObject, ref: ElementRef, charsets: list[str] | None = None
) -> str:
    """The text a filter test compares for ``ref`` in ``obj``, as CTP computes it.

    CTP (``DicomObject.getElementValue``) takes dcm4che's strings of the element and joins
    multiple values with a backslash, so ``ImageType`` reads ``ORIGINAL\\PRIMARY\\AXIAL``;
    a missing element, a sequence, bulk data and a name matching nothing all read as ''.
    Strings are decoded with the object's Specific Character Set and trimmed as dcm4che
    does: trailing spaces and NULs always, leading spaces for AE, CS, DS, IS, LO and SH,
    trailing '^' for PN. Numbers read in decimal. Group 0002 elements come from the file
    meta information. A private element of unknown VR (implicit VR files) is decoded as
    text, as CTP does for private elements.
    """
    tag = ref.tag
    if tag is not None and tag >> 16 == _FILE_META_GROUP:
        element = obj.meta.elements.get(tag)
    else:
        element = find(obj, ref)
    if element is None:
        return ""
    if (
        element.vr == "UN"
        and ref.steps[-1].creator is not None
        and element.items is None
        and element.length != UNDEFINED_LENGTH
    ):
        raw = obj.raw(element)
        return decode_bytes(raw, charsets or encodings(obj), set()).rstrip(" \x00")
    text = value(obj, element, charsets)
    if element.vr in _TRIMMED_BOTH_ENDS:
        return text.lstrip(" ")
    if element.vr == "PN":
        return text.rstrip(" ^\x00")
    return text


class _Values:
    """The element texts of one object, each read once however often the script asks."""

    __slots__ = ("_cache", "_charsets", "obj")

    def __init__(self, obj: DicomObject) -> None:
        self.obj = obj
        self._charsets: list[str] | None = None
        self._cache: dict[str, str] = {}  # by name: element_ref gives one ref per name

    def get(self, ref: ElementRef) -> str:
        text = self._cache.get(ref.text)
        if text is None:
            if self._charsets is None:
                self._charsets = encodings(self.obj)
            text = element_text(self.obj, ref, self._charsets)
            self._cache[ref.text] = text
        return text


# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------

_Predicate = Callable[[str], bool]

_NOT_NUMERIC = re.compile(r"[^0-9.]")
_JAVA_DOUBLE = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")


def _number(text: str) -> float | None:
    """CTP's reading of a number: every character but digits and '.' is dropped (signs,
    exponents, units, backslashes) and the rest must parse as a Java double."""
    digits = _NOT_NUMERIC.sub("", text)
    if not _JAVA_DOUBLE.fullmatch(digits):
        return None
    return float(digits)


@lru_cache(maxsize=512)
def _regex(source: str) -> re.Pattern[str]:
    # Java's \d, \w, \s, \b and (?i) are ASCII-only by default.
    return re.compile(source, re.ASCII)


def _equals(literal: str) -> _Predicate:
    return lambda text: text == literal


def _equals_ignore_case(literal: str) -> _Predicate:
    lowered = literal.lower()
    return lambda text: text.lower() == lowered


def _contains(literal: str) -> _Predicate:
    return lambda text: literal in text


def _contains_ignore_case(literal: str) -> _Predicate:
    lowered = literal.lower()
    return lambda text: lowered in text.lower()


def _starts_with(literal: str) -> _Predicate:
    return lambda text: text.startswith(literal)


def _starts_with_ignore_case(literal: str) -> _Predicate:
    lowered = literal.lower()
    return lambda text: text.lower().startswith(lowered)


def _ends_with(literal: str) -> _Predicate:
    return lambda text: text.endswith(literal)


def _ends_with_ignore_case(literal: str) -> _Predicate:
    lowered = literal.lower()
    return lambda text: text.lower().endswith(lowered)


def _matches(literal: str) -> _Predicate:
    try:
        fullmatch = _regex(literal).fullmatch
    except re.error as exc:
        raise ValueError(f"invalid regular expression for matches: {exc}") from None
    return lambda text: fullmatch(text) is not None


def _threshold(method: str, literal: str) -> float:
    if "-" in literal:
        raise ValueError(
            f"{method} cannot compare with a negative number: CTP drops the sign "
            f"(it would compare with {_NOT_NUMERIC.sub('', literal) or 'nothing'})"
        )
    number = _number(literal)
    if number is None:
        raise ValueError(f"{method} needs a number as its argument")
    return number


def _is_less_than(literal: str) -> _Predicate:
    limit = _threshold("isLessThan", literal)

    def less(text: str) -> bool:
        number = _number(text)
        return number is not None and number < limit

    return less


def _is_greater_than(literal: str) -> _Predicate:
    limit = _threshold("isGreaterThan", literal)

    def greater(text: str) -> bool:
        number = _number(text)
        return number is not None and number > limit

    return greater


_METHODS: dict[str, Callable[[str], _Predicate]] = {
    "equals": _equals,
    "equalsIgnoreCase": _equals_ignore_case,
    "contains": _contains,
    "containsIgnoreCase": _contains_ignore_case,
    "startsWith": _starts_with,
    "startsWithIgnoreCase": _starts_with_ignore_case,
    "endsWith": _ends_with,
    "endsWithIgnoreCase": _ends_with_ignore_case,
    "matches": _matches,
    "isLessThan": _is_less_than,
    "isGreaterThan": _is_greater_than,
}


# ---------------------------------------------------------------------------------------
# Syntax tree
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool


@dataclass(frozen=True, slots=True)
class _Test:
    ref: ElementRef
    method: str
    literal: str
    predicate: _Predicate


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[_Node, ...]


_Node = _Const | _Test | _Not | _And | _Or
_Evaluator = Callable[[_Values], bool]


def _compile(node: _Node) -> _Evaluator:
    """Closures evaluating ``node``; and/or stop at the first deciding operand."""
    if isinstance(node, _Const):
        constant = node.value
        return lambda values: constant
    if isinstance(node, _Test):
        ref, predicate = node.ref, node.predicate
        return lambda values: predicate(values.get(ref))
    if isinstance(node, _Not):
        operand = _compile(node.operand)
        return lambda values: not operand(values)
    parts = tuple(_compile(child) for child in node.operands)
    if isinstance(node, _And):
        return lambda values: all(part(values) for part in parts)
    return lambda values: any(part(values) for part in parts)


_OR, _AND, _ATOM = 1, 2, 4


def _render(node: _Node, context: int = 0) -> str:
    if isinstance(node, _Const):
        return "true." if node.value else "false."
    if isinstance(node, _Test):
        return f'{node.ref.text}.{node.method}("{node.literal}")'
    if isinstance(node, _Not):
        inner = _render(node.operand, _ATOM)
        return f"!({inner})" if isinstance(node.operand, _Not) else "!" + inner
    if isinstance(node, _And):
        text, level = " * ".join(_render(child, _AND) for child in node.operands), _AND
    else:
        text, level = " + ".join(_render(child, _OR) for child in node.operands), _OR
    return f"({text})" if context > level else text


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------

_CONSTANT = re.compile(r"(true|false)\s*\.")
_BARE_ARGUMENT = re.compile(r"[A-Za-z0-9._+-]+(?=\s*\))")
_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9_]+")
# A tag or private element in parentheses, e.g. (0008,0060) or (0009[CREATOR]10),
# followed by '.' or '::': an element name, not a parenthesised expression.
_PAREN_ELEMENT = re.compile(
    r"\(\s*[0-9A-Fa-f]{4}\s*,?\s*(?:\[[^\]\n]*\]\s*[0-9A-Fa-f]{2}|[0-9A-Fa-f]{4})\s*\)"
    r"\s*(?:\.|::)"
)
_EXPECTED_TERM = "expected a test such as Modality.equals(\"CT\"), 'true.', 'false.', '!' or '('"


class _Parser:
    """Recursive descent over the script text with CTP's precedence (! over * over +)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- positions and messages ---------------------------------------------------------

    def where(self, pos: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, column

    def error(self, pos: int, reason: str) -> FilterSyntaxError:
        if pos >= len(self.text):  # point just past the last thing written
            pos = len(self.text.rstrip())
        line, column = self.where(pos)
        return FilterSyntaxError(line, column, reason)

    def at(self, pos: int) -> str:
        line, column = self.where(pos)
        return f"line {line}, column {column}"

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "found the end of the script"
        word = _WORD.match(self.text, self.pos)
        return f"found {word[0] if word else self.text[self.pos]!r}"

    # -- tokens ---------------------------------------------------------------------------

    def skip(self) -> None:
        """Skip whitespace and ``//`` comments."""
        text, pos, end = self.text, self.pos, len(self.text)
        while pos < end:
            if text[pos].isspace():
                pos += 1
            elif text.startswith("//", pos):
                newline = text.find("\n", pos)
                pos = end if newline < 0 else newline + 1
            else:
                break
        self.pos = pos

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    # -- grammar --------------------------------------------------------------------------

    def script(self) -> _Node | None:
        if not self.peek():
            return None
        node = self.disjunction()
        if self.peek():
            if self.text[self.pos] == ")":
                raise self.error(self.pos, "')' without a matching '('")
            raise self.error(
                self.pos, f"expected '+', '*' or the end of the script, {self.found()}"
            )
        return node

    def disjunction(self) -> _Node:
        operands = [self.conjunction(None)]
        while self.peek() == "+":
            operator = self.pos
            self.pos += 1
            operands.append(self.conjunction(operator))
        return _flatten(_Or, operands)

    def conjunction(self, after: int | None) -> _Node:
        operands = [self.negation(after)]
        while self.peek() == "*":
            operator = self.pos
            self.pos += 1
            operands.append(self.negation(operator))
        return _flatten(_And, operands)

    def negation(self, after: int | None) -> _Node:
        char = self.peek()
        if char == "!":
            operator = self.pos
            self.pos += 1
            if self.peek() == "!":
                raise self.error(
                    self.pos,
                    "'!' directly after '!' is refused because CTP evaluates '!!x' as "
                    "'!x'; write '!(!x)' or leave both out",
                )
            return _Not(self.negation(operator))
        if char == "(" and not _PAREN_ELEMENT.match(self.text, self.pos):
            opening = self.pos
            self.pos += 1
            node = self.disjunction()
            if self.peek() != ")":
                alternatives = "" if self.pos >= len(self.text) else " (or '+', '*')"
                raise self.error(
                    self.pos,
                    f"expected ')' to close the '(' at {self.at(opening)}{alternatives}, "
                    f"{self.found()}",
                )
            self.pos += 1
            return node
        return self.term(after)

    def term(self, after: int | None) -> _Node:
        start = self.pos
        constant = _CONSTANT.match(self.text, start)
        if constant:
            self.pos = constant.end()
            return _Const(constant[1] == "true")
        char = self.text[start] if start < len(self.text) else ""
        if not char or not (char.isalnum() or char in "[("):
            context = ""
            if after is not None:
                context = f" after the {self.text[after]!r} at {self.at(after)}"
            raise self.error(start, f"{_EXPECTED_TERM}{context}, {self.found()}")
        name = self.element_name()
        try:
            ref = element_ref(name)
        except UnknownElement as exc:
            raise self.error(start, str(exc)) from None
        if self.peek() != ".":
            raise self.error(
                self.pos, f"expected '.' and a method after {name!r}, {self.found()}"
            )
        self.pos += 1
        self.skip()
        method_at = self.pos
        method = _METHOD_NAME.match(self.text, method_at)
        if not method:
            raise self.error(method_at, f"expected a method name after '.', {self.found()}")
        self.pos = method.end()
        factory = _METHODS.get(method[0])
        if factory is None:
            raise self.error(method_at, _unknown_method(method[0]))
        if self.peek() != "(":
            raise self.error(self.pos, f"expected '(' after {method[0]}, {self.found()}")
        self.pos += 1
        self.skip()
        quote = self.pos
        bare = _BARE_ARGUMENT.match(self.text, quote)
        if self.peek() != '"' and bare:
            # The RSNA Anonymizer's own manual writes SeriesNumber.equals(2): a bare word
            # or number is taken as if it were quoted.
            literal = bare[0]
            self.pos = bare.end()
        elif self.peek() != '"':
            raise self.error(
                self.pos, f'expected a quoted argument ("...") for {method[0]}, {self.found()}'
            )
        else:
            closing = self.text.find('"', quote + 1)
            newline = self.text.find("\n", quote + 1)
            if closing < 0 or 0 <= newline < closing:
                raise self.error(quote, "the quoted argument has no closing '\"' on its line")
            literal = self.text[quote + 1 : closing]
            self.pos = closing + 1
        if self.peek() != ")":
            raise self.error(
                self.pos, f"expected ')' after the argument of {method[0]}, {self.found()}"
            )
        self.pos += 1
        try:
            predicate = factory(literal)
        except ValueError as exc:
            raise self.error(quote, str(exc)) from None
        return _Test(ref, method[0], literal, predicate)

    def element_name(self) -> str:
        """The text of an element name: keyword and tag characters, ``[...]`` (which may
        hold spaces and dots: private creators), ``(...)`` at the start of a path step,
        and ``::`` between steps."""
        text, start, end = self.text, self.pos, len(self.text)
        pos = start
        step_start = True
        while pos < end:
            char = text[pos]
            if char in "[(" and (char == "[" or step_start):
                closing = _matching(text, pos)
                if closing < 0:
                    raise self.error(pos, f"{char!r} without a matching close on its line")
                pos = closing + 1
                step_start = False
            elif text.startswith("::", pos):
                pos += 2
                step_start = True
            elif char.isalnum() or char in "_,":
                pos += 1
                step_start = False
            else:
                break
        self.pos = pos
        return text[start:pos]


def _matching(text: str, pos: int) -> int:
    """Where the ``[`` or ``(`` at ``pos`` closes, -1 when not on the same line. Square
    brackets nest and hide parentheses (a private creator may hold any character but
    ']')."""
    in_parentheses = text[pos] == "("
    depth = 0
    for index in range(pos, len(text)):
        char = text[index]
        if char == "\n":
            return -1
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0 and not in_parentheses:
                return index
        elif char == ")" and in_parentheses and depth == 0:
            return index
    return -1


def _unknown_method(name: str) -> str:
    known = ", ".join(_METHODS)
    for candidate in _METHODS:
        if candidate.lower() == name.lower():
            return f"unknown method {name!r} (method names are case-sensitive: {candidate})"
    return f"unknown method {name!r} (known methods: {known})"


def _flatten(kind: type[_And] | type[_Or], operands: list[_Node]) -> _Node:
    if len(operands) == 1:
        return operands[0]
    flat: list[_Node] = []
    for operand in operands:
        if isinstance(operand, kind):
            flat.extend(operand.operands)
        else:
            flat.append(operand)
    return kind(tuple(flat))


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


class FilterScript:
    """A parsed DicomFilter script, compiled once and evaluated for any number of objects."""

    __slots__ = ("_evaluate", "_root", "_text")

    def __init__(self, text: str, root: _Node | None) -> None:
        self._text = text
        self._root = root
        self._evaluate: _Evaluator | None = None if root is None else _compile(root)

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
        return cls(text, _Parser(text).script())

    @property
    def text(self) -> str:
        """The script as written."""
        return self._text

    def matches(self, obj: DicomObject) -> bool:
        """Whether the script accepts ``obj`` (a blank script accepts everything)."""
        if self._evaluate is None:
            return True
        return self._evaluate(_Values(obj))

    def describe(self) -> str:
        """The expression in a normalised form (no comments, one space around binary
        operators, parentheses only where needed) that parses back to the same script;
        it holds the script's own arguments but nothing read from any object."""
        return "true." if self._root is None else _render(self._root)

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
