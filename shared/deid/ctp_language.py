"""The function language of CTP DicomAnonymizer scripts: parsing.

A script is literal text with function calls: ``@param(@SITEID)-@integer(PatientID,ptid,6)``.
``\\`` escapes the next character; ``@name(arg,...)`` calls a function, whose arguments are
raw text (element names, ``this``, ``@PARAM`` references, quoted strings; commas inside
quotes or ``[...]`` do not split); ``@if``, ``@select`` and ``@append`` take ``{...}``
clauses, which are scripts themselves.

Where CTP turns a malformed script into a quarantine of every object at run time (an ``@``
not followed by ``(``, an unknown function, a missing clause, an unknown element), the
script is refused here, when it is loaded, with the position and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.deid.elements import UnknownElement, element_ref

# Functions CTP executes, and the result tokens it recognises (echoed as text by CTP).
FUNCTIONS = frozenset({
    "always", "append", "contents", "date", "dateinterval", "hash", "hashdate", "hashname",
    "hashptid", "hashuid", "if", "incrementdate", "initials", "integer", "lookup",
    "lowercase", "modifydate", "param", "pathelement", "process", "quarantine", "require",
    "round", "select", "skip", "time", "truncate", "uppercase", "value",
})
TOKENS = frozenset({"keep", "remove", "empty", "blank"})
# Operations of the RSNA Anonymizer's own scripts, written without parentheses.
BARE_OPERATIONS = frozenset({"uid", "ptid", "acc", "hashdate"})
UNSUPPORTED = {
    "call": "plugins (@call) cannot run here",
    "encrypt": "@encrypt is not supported",
    "decrypt": "@decrypt is not supported",
}
CLAUSES = {"if": 2, "select": 2, "append": 1}

# Which arguments name elements (checked when the script is loaded).
ELEMENT_ARGUMENTS: dict[str, tuple[int, ...]] = {
    "contents": (0,), "value": (0,), "truncate": (0,), "lowercase": (0,), "uppercase": (0,),
    "pathelement": (0,), "initials": (0,), "hash": (0,), "hashname": (0,), "hashptid": (1,),
    "hashuid": (1, 2), "hashdate": (0, 1), "incrementdate": (0,), "modifydate": (0,),
    "dateinterval": (0, 2), "integer": (0,), "round": (0,), "require": (0,), "if": (0,),
}
# Which arguments may be @PARAM references.
PARAMETER_ARGUMENTS: dict[str, tuple[int, ...]] = {
    "param": (0,), "hash": (1,), "hashname": (1, 2), "hashptid": (0, 2), "hashuid": (0,),
    "incrementdate": (1, 2), "modifydate": (1, 2, 3), "dateinterval": (3,), "round": (1,),
}

_NAME = re.compile(r"[A-Za-z]+")


class ScriptSyntaxError(ValueError):
    """A script that cannot be run; ``position`` is the character offset in the script."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


@dataclass(frozen=True, slots=True)
class Text:
    value: str


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[str, ...]
    clauses: tuple[Script, ...]
    bare: bool = False

    def arg(self, index: int) -> str:
        """Argument ``index`` without surrounding quotes ('' when absent)."""
        if index >= len(self.args):
            return ""
        text = self.args[index]
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            return text[1:-1]
        return text


@dataclass(frozen=True, slots=True)
class Script:
    parts: tuple[Text | Call, ...]

    def starts_with_always(self) -> bool:
        first = self.parts[0] if self.parts else None
        return isinstance(first, Call) and first.name == "always"


def parse_script(text: str, parameters: set[str], offset: int = 0) -> Script:
    """Parse one element script; raises :class:`ScriptSyntaxError`."""
    parts: list[Text | Call] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            if i + 1 < n:
                literal.append(text[i + 1])
            i += 2
            continue
        if char != "@":
            literal.append(char)
            i += 1
            continue
        match = _NAME.match(text, i + 1)
        if match is None:
            raise ScriptSyntaxError(
                "'@' must begin a function call such as @param(...); write \\@ for a literal @",
                offset + i,
            )
        name, j = match[0], match.end()
        if name in UNSUPPORTED:
            raise ScriptSyntaxError(UNSUPPORTED[name], offset + i)
        if name not in FUNCTIONS and name not in TOKENS and name not in BARE_OPERATIONS:
            raise ScriptSyntaxError(f"unknown function @{name}", offset + i)
        if j < n and text[j] == "(":
            args, j = _arguments(text, j + 1, offset)
            bare = False
        elif name in BARE_OPERATIONS:
            args, bare = [], True
        else:
            raise ScriptSyntaxError(f"@{name} must be followed by '('", offset + i)
        clauses: list[Script] = []
        for _ in range(CLAUSES.get(name, 0) if not bare else 0):
            while j < n and text[j].isspace():
                j += 1
            if j >= n or text[j] != "{":
                needed = "{...}" * CLAUSES[name]
                raise ScriptSyntaxError(f"@{name}(...) must be followed by {needed}", offset + j)
            inner, after = _clause(text, j, offset)
            clauses.append(parse_script(inner, parameters, offset + j + 1))
            j = after
        call = Call(name, tuple(args), tuple(clauses), bare)
        _check(call, parameters, offset + i)
        if literal:
            parts.append(Text("".join(literal)))
            literal = []
        parts.append(call)
        i = j
    if literal:
        parts.append(Text("".join(literal)))
    return Script(tuple(parts))


def _arguments(text: str, i: int, offset: int) -> tuple[list[str], int]:
    """Split arguments up to the closing parenthesis; returns them and the index after it."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    brackets = parens = 0
    start = i
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted:
            if char == "[":
                brackets += 1
            elif char == "]":
                brackets = max(0, brackets - 1)
            elif char == "(":
                parens += 1
            elif char == ")" and parens:
                parens -= 1
            elif char == ")" and not brackets:
                args.append("".join(current).strip())
                return args, i + 1
            elif char == "," and not brackets and not parens:
                args.append("".join(current).strip())
                current = []
                i += 1
                continue
        current.append(char)
        i += 1
    raise ScriptSyntaxError("missing ')' to close the arguments", offset + start - 1)


def _clause(text: str, i: int, offset: int) -> tuple[str, int]:
    """The text inside the ``{...}`` starting at ``i``, and the index after its ``}``."""
    depth, quoted, j = 0, False, i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "{":
            depth += 1
        elif not quoted and char == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
        j += 1
    raise ScriptSyntaxError("missing '}' to close the clause", offset + i)


def _check(call: Call, parameters: set[str], position: int) -> None:
    """Element names and parameter references must exist when the script is loaded."""
    for index in ELEMENT_ARGUMENTS.get(call.name, ()):
        if index < len(call.args):
            check_element_name(call.arg(index), position)
    if call.name == "incrementdate" and len(call.args) > 2:
        check_element_name(call.arg(1), position)  # the key element of the lookup form
    if call.name == "lookup" and call.args:
        for name in call.arg(0).split("|"):
            check_element_name(name, position)
    for index in PARAMETER_ARGUMENTS.get(call.name, ()):
        if index < len(call.args):
            text = call.arg(index)
            if text[:1] in ("@", "$") and text[1:] not in parameters:
                raise ScriptSyntaxError(f"parameter {text} is not defined", position)
    if call.name == "integer" and len(call.args) < 2:
        raise ScriptSyntaxError("@integer needs an element and a key type", position)
    if call.name == "dateinterval" and len(call.args) < 3:
        raise ScriptSyntaxError("@dateinterval needs a date, a key type and a key", position)
    if call.name in ("hashptid", "hashuid", "hashname", "lookup", "round") and len(call.args) < 2:
        raise ScriptSyntaxError(f"@{call.name} needs at least two arguments", position)


def check_element_name(name: str, position: int) -> None:
    name = name.strip()
    if name in ("", "this") or (name.startswith("root:") and name[5:] in ("", "this")):
        return
    try:
        element_ref(name.removeprefix("root:"))
    except UnknownElement as exc:
        raise ScriptSyntaxError(str(exc), position) from None
