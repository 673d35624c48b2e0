"""Compiling a CTP DicomAnonymizer script into the engine's rule model.

CTP's decision for each element present (DICOMAnonymizer.processElements): a scripted
element runs its script, whose result is a value or one of ``@keep()``, ``@remove()``
(anywhere in the result), ``@empty()``, ``@blank(n)``; an unscripted element is kept as it
is (a sequence with its items untouched), unless a removal switch applies: private groups,
unspecified elements (not in a kept group, nor the SOP Class/Instance and Study UIDs, nor
groups 0002, 0028, 7FE0, nor curves unless removed), overlays (groups 60xx, even when
scripted). ``@process()`` applies the rules inside a sequence's items. Scripts starting
with ``@always()`` create their element when the object lacks it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydicom.datadict import dictionary_VR

from shared.deid.context import ObjectContext
from shared.deid.ctp_functions import (
    EMPTY,
    KEEP,
    REMOVE,
    Evaluation,
    ScriptFailure,
    encode_numbers,
)
from shared.deid.ctp_language import Script
from shared.deid.ctp_script import AnonymizerScript, ScriptEntry
from shared.deid.lookup import LookupTable
from shared.deid.profile import METHOD_CODES
from shared.deid.rules import (
    COPY,
    Action,
    ActionResult,
    Addition,
    AppendItems,
    Kind,
    Outcome,
    Recurse,
    RuleSet,
    SequenceItems,
    TextTreatment,
    Typed,
)
from shared.deid.rules import (
    REMOVE as REMOVE_ACTION,
)
from shared.deid.standard import safe_private
from shared.dicom.parse import Element

DEIDENTIFICATION_METHOD_CODES = 0x00120064
PATIENT_ID = 0x00100020
_ALWAYS_KEPT_TAGS = (0x00080016, 0x00080018, 0x0020000D)
_ALWAYS_KEPT_GROUPS = (0x0002, 0x0028, 0x7FE0)
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_FORMATS = {
    "DA": re.compile(r"^\d{8}$"),
    "DT": re.compile(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$"),
    "TM": re.compile(r"^\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?$"),
}
# PS3.16 CID 7050, the codes CTP knows (113100-113112).
_METHOD_MEANINGS = {
    **dict(METHOD_CODES.values()),
    "113101": "Clean Pixel Data Option",
    "113102": "Clean Recognizable Visual Features Option",
}


class _Script:
    """What every action of one compiled script shares."""

    def __init__(
        self, script: AnonymizerScript, site_id: str, lookup: LookupTable | None
    ) -> None:
        self.params = {**script.params, "SITEID": site_id}
        self.lookup = lookup
        self.by_tag: dict[int, Script] = {e.tag: e.script for e in script.entries if e.tag}

    def evaluation(
        self, ctx: ObjectContext, element: Element | None, entry: ScriptEntry
    ) -> Evaluation:
        return Evaluation(ctx, element, entry.tag, entry.name or entry.target, self.params,
                          self.lookup, self.by_tag)


class ScriptAction(Action):
    """Run an element's script and turn its result into what the engine writes."""

    kind = Kind.REPLACE
    code = "S"

    def __init__(self, entry: ScriptEntry, shared: _Script) -> None:
        self.entry = entry
        self.shared = shared

    def describe(self) -> str:
        return f"script: {self.entry.text}" if self.entry.text else "script: (empty)"

    def compute(self, ctx: ObjectContext, element: Element) -> ActionResult:
        evaluation = self.shared.evaluation(ctx, element, self.entry)
        result = evaluation.evaluate(self.entry.script).strip()
        if REMOVE in result:
            return None
        if result == KEEP:
            processed = evaluation.process and element.items is not None
            return Outcome.PROCESS if processed else Outcome.KEEP
        if result.startswith("@blank("):
            digits = re.match(r"\d*", result[7:])
            result = " " * min(int(digits[0]) if digits and digits[0] else 0, 55)
        elif result == EMPTY:
            result = ""
        if element.tag >> 16 & 1:
            return Typed(_vr(element.tag, len(result)), result)
        vr = element.vr if element.vr != "UN" else _vr(element.tag)
        typed = _typed(result, vr, ctx, evaluation.element_name)
        return Typed(vr, typed) if vr != element.vr and isinstance(typed, str) else typed


def _typed(result: str, vr: str, ctx: ObjectContext, name: str) -> ActionResult:
    """The result in the element's VR. CTP keeps the original value when the result does
    not fit (a date that is not a date): that would keep PHI, so the object is refused."""
    if vr == "SQ":
        if result.strip():
            raise ScriptFailure(f"{name}: a script cannot set a sequence to text")
        return Outcome.KEEP
    pattern = _FORMATS.get(vr)
    valid = pattern is None or all(pattern.match(v.strip()) for v in result.split("\\"))
    if result.strip() and not valid:
        raise ScriptFailure(f"{name}: the script's result is not a valid {vr} value")
    if vr in _NUMERIC_VRS:
        try:
            return encode_numbers(vr, result, ctx.obj.syntax.little_endian)
        except (ValueError, KeyError):
            raise ScriptFailure(f"{name}: the script's result is not a number") from None
    if vr in _BINARY_VRS and result:
        raise ScriptFailure(f"{name}: a script cannot set binary data to text")
    return result


class MethodCodesAction(Action):
    """(0012,0064): CTP turns ``113100/113107/...`` into code items (``reset`` starts over)."""

    kind = Kind.REPLACE
    code = "S"

    def __init__(self, entry: ScriptEntry, shared: _Script) -> None:
        self.entry = entry
        self.shared = shared

    def describe(self) -> str:
        return f"code items: {self.entry.text}"

    def items(self, ctx: ObjectContext, element: Element | None) -> SequenceItems:
        return self._codes(ctx, element)[1]

    def _codes(self, ctx: ObjectContext, element: Element | None) -> tuple[bool, SequenceItems]:
        """(whether the codes start with ``reset``, the new items)."""
        result = self.shared.evaluation(ctx, element, self.entry).evaluate(self.entry.script)
        items: SequenceItems = []
        reset = False
        for code in (c.strip() for c in result.strip().split("/")):
            if code.lower() == "reset":
                reset, items = True, []
                continue
            if not code:
                continue
            meaning = _METHOD_MEANINGS.get(code)
            items.append([
                (0x00080100, "SH", code),
                (0x00080102, "SH", "DCM" if meaning else "UNKNOWN"),
                (0x00080104, "LO", meaning or "UNKNOWN"),
            ])
        return reset, items

    def compute(self, ctx: ObjectContext, element: Element) -> ActionResult:
        text = self.entry.text.strip()
        if not text or text == KEEP:
            return Outcome.KEEP
        if text == REMOVE:
            return None
        reset, items = self._codes(ctx, element)
        return items if reset or element.items is None else AppendItems(items)


def _creation(entry: ScriptEntry, shared: _Script, vr: str) -> Callable[
        [ObjectContext], str | SequenceItems | None]:
    """The value of an element an ``@always()`` script creates (None: create nothing)."""

    def value(ctx: ObjectContext) -> str | SequenceItems | None:
        if vr == "SQ":
            return [] if entry.text.replace(" ", "").startswith("@always()@require(") else None
        result = shared.evaluation(ctx, None, entry).evaluate(entry.script).strip()
        if result == KEEP or REMOVE in result:
            return None
        if result.startswith("@blank(") or result == EMPTY:
            return ""
        if entry.tag >> 16 & 1:
            return result
        typed = _typed(result, vr, ctx, entry.name or entry.target)
        return typed if isinstance(typed, str) else None

    return value


def _method_creation(
    codes: MethodCodesAction,
) -> Callable[[ObjectContext], str | SequenceItems | None]:
    def value(ctx: ObjectContext) -> str | SequenceItems | None:
        return codes.items(ctx, None)

    return value


def _vr(tag: int, text_length: int = 0) -> str:
    if tag >> 16 & 1:
        return "LO" if (tag & 0xFF00) == 0 or text_length <= 64 else "LT"
    try:
        return dictionary_VR(tag)[:2]
    except KeyError:
        return "SH"


def compile_script(
    script: AnonymizerScript, site_id: str, lookup: LookupTable | None = None
) -> RuleSet:
    """The rule set that does what the script does (see the module docstring)."""
    shared = _Script(script, site_id, lookup)
    rules = RuleSet(name=f"CTP script {script.name}", sha256=script.sha256)
    if script.dialect == "rsna":
        return _compile_rsna(script, shared, rules)
    remove = script.remove
    private_scripts: dict[tuple[int, str, int], Action] = {}
    for entry in script.entries:
        if not entry.enabled:
            continue
        if "overlays" in remove and (entry.tag >> 16) & 0xFF00 == 0x6000:
            continue  # CTP removes overlays even when they are scripted
        if entry.tag == DEIDENTIFICATION_METHOD_CODES:
            codes = MethodCodesAction(entry, shared)
            rules.by_tag[entry.tag] = codes
            if entry.text.strip() and entry.text.strip() not in (KEEP, REMOVE):
                rules.additions.append(Addition(
                    entry.tag, "SQ", _method_creation(codes), "code items", only_if_absent=True))
            continue
        action = ScriptAction(entry, shared)
        if entry.private is not None:
            private_scripts[entry.private] = action
            continue
        rules.by_tag[entry.tag] = action
        if entry.script.starts_with_always():
            vr = _vr(entry.tag, 0)
            rules.additions.append(Addition(entry.tag, vr, _creation(entry, shared, vr),
                                            entry.text, only_if_absent=True))
    unspecified_removed = "unspecifiedelements" in remove
    rules.unspecified = REMOVE_ACTION if unspecified_removed else COPY
    for tag in _ALWAYS_KEPT_TAGS:
        rules.by_tag.setdefault(tag, COPY)
    # Overlay removal first: it wins over kept groups, as in CTP.
    rules.masked.append((0xFF000000, 0x60000000, REMOVE_ACTION if "overlays" in remove else COPY))
    for group in {*script.keep_groups, *_ALWAYS_KEPT_GROUPS}:
        rules.masked.append((0xFFFF0000, group << 16, COPY))
    if "curves" not in remove:
        rules.masked.append((0xFF000000, 0x50000000, COPY))
    removes_private = "privategroups" in remove or unspecified_removed
    rules.private = REMOVE_ACTION if removes_private else COPY
    rules.private_by_creator = _private_rule(script, private_scripts)
    return rules


def _private_rule(
    script: AnonymizerScript, scripted: dict[tuple[int, str, int], Action]
) -> Callable[[int, str | None], Action | None]:
    safe = {(s.group, s.creator.upper(), s.element_low) for s in safe_private()}
    keep_safe = script.keep_safe_private
    overlays_removed = "overlays" in script.remove
    kept_groups = script.keep_groups

    def decide(tag: int, creator: str | None) -> Action | None:
        group, low = tag >> 16, tag & 0xFFFF
        if overlays_removed and group & 0xFF00 == 0x6000:
            return REMOVE_ACTION
        if creator is not None and low >= 0x1000:
            action = scripted.get((group, creator, low & 0xFF))
            if action is not None:
                return action
        if group in kept_groups:
            return COPY
        safe_element = creator is not None and (
            low <= 0x00FF or (group, creator.upper(), low & 0xFF) in safe
        )
        return COPY if keep_safe and safe_element else None

    return decide


def _compile_rsna(script: AnonymizerScript, shared: _Script, rules: RuleSet) -> RuleSet:
    """The RSNA Anonymizer's rules: listed elements are kept (an empty script) or
    replaced, everything else is removed, private groups too, at every depth."""
    for entry in script.entries:
        if not entry.tag:
            continue
        if "@remove" in entry.text:
            rules.by_tag[entry.tag] = REMOVE_ACTION
        elif not entry.text:
            rules.by_tag[entry.tag] = Recurse(TextTreatment.NONE, "K") if _vr(
                entry.tag) == "SQ" else COPY
        else:
            action = ScriptAction(entry, shared)
            rules.by_tag[entry.tag] = action
            if entry.tag == PATIENT_ID:
                # The RSNA Anonymizer gives objects without a Patient ID one (PS3.3 Type 2).
                rules.additions.append(Addition(
                    entry.tag, "LO", _creation(entry, shared, "LO"), entry.text,
                    only_if_absent=True))
    rules.unspecified = REMOVE_ACTION
    rules.private = REMOVE_ACTION
    return rules
