"""The syntax of CTP's DicomFilter script language: the tree a script parses to, the
parser building it, and the tree compiled to closures or rendered back to text.

:class:`Parser` is a recursive descent with CTP's precedence (``!`` over ``*`` over
``+``); it raises :class:`ParseError` at the first problem, which
:meth:`shared.deid.ctp_filter.FilterScript.parse` reports as a ``FilterSyntaxError``.
The values tests read and the methods are in :mod:`shared.deid.ctp_filter_methods`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from shared.deid.ctp_filter_methods import METHODS, Predicate, Values
from shared.deid.elements import ElementRef, UnknownElement, element_ref


class ParseError(Exception):
    """Where a script stops parsing (``line`` and ``column``, both from 1) and why."""

    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(line, column, reason)
        self.line = line
        self.column = column
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool


@dataclass(frozen=True, slots=True)
class _Test:
    ref: ElementRef
    method: str
    literal: str
    predicate: Predicate


@dataclass(frozen=True, slots=True)
class _Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[Node, ...]


Node = _Const | _Test | _Not | _And | _Or
Evaluator = Callable[[Values], bool]


def compile_node(node: Node) -> Evaluator:
    """Closures evaluating ``node``; and/or stop at the first deciding operand."""
    if isinstance(node, _Const):
        constant = node.value
        return lambda values: constant
    if isinstance(node, _Test):
        ref, predicate = node.ref, node.predicate
        return lambda values: predicate(values.get(ref))
    if isinstance(node, _Not):
        operand = compile_node(node.operand)
        return lambda values: not operand(values)
    parts = tuple(compile_node(child) for child in node.operands)
    if isinstance(node, _And):
        return lambda values: all(part(values) for part in parts)
    return lambda values: any(part(values) for part in parts)


_OR, _AND, _ATOM = 1, 2, 4


def render(node: Node, context: int = 0) -> str:
    if isinstance(node, _Const):
        return "true." if node.value else "false."
    if isinstance(node, _Test):
        return f'{node.ref.text}.{node.method}("{node.literal}")'
    if isinstance(node, _Not):
        inner = render(node.operand, _ATOM)
        return f"!({inner})" if isinstance(node.operand, _Not) else "!" + inner
    if isinstance(node, _And):
        text, level = " * ".join(render(child, _AND) for child in node.operands), _AND
    else:
        text, level = " + ".join(render(child, _OR) for child in node.operands), _OR
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


class Parser:
    """Recursive descent over the script text with CTP's precedence (! over * over +)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- positions and messages ---------------------------------------------------------

    def where(self, pos: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, column

    def error(self, pos: int, reason: str) -> ParseError:
        if pos >= len(self.text):  # point just past the last thing written
            pos = len(self.text.rstrip())
        line, column = self.where(pos)
        return ParseError(line, column, reason)

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

    def script(self) -> Node | None:
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

    def disjunction(self) -> Node:
        operands = [self.conjunction(None)]
        while self.peek() == "+":
            operator = self.pos
            self.pos += 1
            operands.append(self.conjunction(operator))
        return _flatten(_Or, operands)

    def conjunction(self, after: int | None) -> Node:
        operands = [self.negation(after)]
        while self.peek() == "*":
            operator = self.pos
            self.pos += 1
            operands.append(self.negation(operator))
        return _flatten(_And, operands)

    def negation(self, after: int | None) -> Node:
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

    def term(self, after: int | None) -> Node:
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
        factory = METHODS.get(method[0])
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
    known = ", ".join(METHODS)
    for candidate in METHODS:
        if candidate.lower() == name.lower():
            return f"unknown method {name!r} (method names are case-sensitive: {candidate})"
    return f"unknown method {name!r} (known methods: {known})"


def _flatten(kind: type[_And] | type[_Or], operands: list[Node]) -> Node:
    if len(operands) == 1:
        return operands[0]
    flat: list[Node] = []
    for operand in operands:
        if isinstance(operand, kind):
            flat.extend(operand.operands)
        else:
            flat.append(operand)
    return kind(tuple(flat))

