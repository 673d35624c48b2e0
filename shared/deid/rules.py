"""The rule model: which action applies to which element.

A :class:`RuleSet` maps elements to :class:`Action` objects by exact tag, by private
block, by repeating-group mask, by value representation, and finally by a default for
unspecified elements; it also lists elements to add to every object. The PS3.15 profile
(:mod:`shared.deid.profile`) compiles into a RuleSet, and so can scripts written for other
tools (CTP DicomAnonymizer scripts name an action per tag, keep or remove groups, private
groups and unspecified elements), because every decision is an Action that can describe
itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.deid.context import ObjectContext
    from shared.dicom.parse import Element


class Kind(Enum):
    """What the engine does with an element once its action is known."""

    KEEP = "keep"  # copy unchanged (a sequence: apply the rules inside its items)
    COPY = "copy"  # copy unchanged, a sequence with its items as they are
    REMOVE = "remove"
    EMPTY = "empty"  # zero-length value (a sequence: no items)
    REPLACE = "replace"  # the action computes a new value
    SEQUENCE = "sequence"  # apply the rules inside the items, with a text treatment


class Outcome(Enum):
    """Results of a REPLACE action other than a new value."""

    KEEP = "keep"  # leave the element as it was
    PROCESS = "process"  # a sequence: apply the rules inside its items


@dataclass(frozen=True, slots=True)
class Typed:
    """A text value written with a VR other than the element's (a private element set by a
    script is LO; an element received as UN gets its dictionary VR)."""

    vr: str
    value: str


# Items of a sequence to write: each a list of (tag, VR, text value).
SequenceItems = list[list[tuple[int, str, str]]]


@dataclass(frozen=True, slots=True)
class AppendItems:
    """Keep a sequence's items as they are and add new ones after them."""

    items: SequenceItems


ActionResult = str | bytes | None | Outcome | Typed | AppendItems | SequenceItems


class TextTreatment(Enum):
    """How text elements nested in a sequence with a D or C action are handled."""

    NONE = "none"
    DUMMY = "dummy"  # replaced by a dummy value (PS3.15 action D on the sequence)
    CLEAN = "clean"  # identifying terms removed (action C: clean structured content/graphics)


class Action:
    """Base of all actions. ``code`` is the short code used in tables (K, X, Z, D, U, C...)."""

    kind: Kind = Kind.KEEP
    code: str = "K"
    treatment: TextTreatment = TextTreatment.NONE

    def describe(self) -> str:
        raise NotImplementedError

    def compute(self, ctx: ObjectContext, element: Element) -> ActionResult:
        """New value for a REPLACE action: text, raw bytes, None to remove the element, an
        :class:`Outcome`, or the items of a sequence."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.code}: {self.describe()}>"


class Keep(Action):
    kind, code = Kind.KEEP, "K"

    def describe(self) -> str:
        return "keep"


class Copy(Action):
    """Keep an element exactly as it is; a sequence keeps its items untouched (CTP leaves
    sequences alone unless a script processes them)."""

    kind, code = Kind.COPY, "K"

    def describe(self) -> str:
        return "keep as is"


class Remove(Action):
    kind, code = Kind.REMOVE, "X"

    def describe(self) -> str:
        return "remove"


class Empty(Action):
    kind, code = Kind.EMPTY, "Z"

    def describe(self) -> str:
        return "empty (zero length)"


class Recurse(Action):
    """Keep a sequence and apply the rules inside its items, treating text as told."""

    kind = Kind.SEQUENCE

    def __init__(self, treatment: TextTreatment, code: str) -> None:
        self.treatment = treatment
        self.code = code

    def describe(self) -> str:
        if self.treatment is TextTreatment.DUMMY:
            return "apply the profile inside; text replaced by dummy values"
        if self.treatment is TextTreatment.CLEAN:
            return "apply the profile inside; identifying terms removed from text"
        return "apply the profile inside"


class Replace(Action):
    """Replace the value with the result of a function of the element and its object."""

    kind = Kind.REPLACE

    def __init__(
        self,
        code: str,
        description: str,
        function: Callable[[ObjectContext, Element], ActionResult],
    ) -> None:
        self.code = code
        self._description = description
        self._function = function

    def describe(self) -> str:
        return self._description

    def compute(self, ctx: ObjectContext, element: Element) -> ActionResult:
        return self._function(ctx, element)


KEEP = Keep()
COPY = Copy()
REMOVE = Remove()
EMPTY = Empty()


@dataclass(frozen=True, slots=True)
class Addition:
    """An element set at the top level of every object (added, or replacing the original)."""

    tag: int
    vr: str
    # The value, the items of a sequence, or None to add nothing.
    value: Callable[[ObjectContext], str | SequenceItems | None]
    description: str
    # Only create the element when the object lacks it (CTP @always()); otherwise the
    # element's own rule applies.
    only_if_absent: bool = False


@dataclass
class RuleSet:
    """Everything the engine needs to decide about each element of an object."""

    name: str
    # Identity recorded with every object it de-identifies: SHA-256 of the script text,
    # or of the tables and options of the built-in profile.
    sha256: str = ""
    by_tag: dict[int, Action] = field(default_factory=dict)
    masked: list[tuple[int, int, Action]] = field(default_factory=list)
    by_vr: dict[str, Action] = field(default_factory=dict)
    private: Action = REMOVE
    # Returns the action for one private element given its block's creator (None: use
    # ``private``); lets safe private attributes and CTP keep-lists be expressed.
    private_by_creator: Callable[[int, str | None], Action | None] | None = None
    unspecified: Action = KEEP
    additions: list[Addition] = field(default_factory=list)
    _cache: dict[tuple[int, str], Action] = field(default_factory=dict, repr=False)

    def action(self, tag: int, vr: str) -> Action:
        """The action for a standard (even group) element, cached per tag and VR."""
        key = (tag, vr)
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(tag, vr)
            self._cache[key] = found
        return found

    def _resolve(self, tag: int, vr: str) -> Action:
        if tag & 0xFFFF == 0:
            return REMOVE  # group lengths would be wrong after any change
        exact = self.by_tag.get(tag)
        if exact is not None:
            return exact
        for mask, value, masked_action in self.masked:
            if tag & mask == value:
                return masked_action
        return self.by_vr.get(vr, self.unspecified)

    def describe(self) -> list[tuple[str, str, str]]:
        """(tag, code, description) for every rule, in tag order, then the general rules."""
        lines = [
            (f"({tag >> 16:04X},{tag & 0xFFFF:04X})", a.code, a.describe())
            for tag, a in sorted(self.by_tag.items())
        ]
        lines += [(f"mask {v:08X}/{m:08X}", a.code, a.describe()) for m, v, a in self.masked]
        lines += [(f"any {vr} element", a.code, a.describe()) for vr, a in self.by_vr.items()]
        lines.append(("private elements", self.private.code, self.private.describe()))
        lines.append(("other elements", self.unspecified.code, self.unspecified.describe()))
        return lines
