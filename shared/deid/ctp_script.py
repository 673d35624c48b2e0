"""CTP DicomAnonymizer scripts: loading both file formats and compiling them into rules.

XML form: ``<p t="NAME">value</p>`` parameters, ``<e en="T|F" t="ggggeeee" n="Name">script</e>``
element scripts (``en="F"``: the element counts as unscripted), ``<k t="0018">`` keep groups
and ``<k t="safeprivateelements">``, ``<r t="privategroups|unspecifiedelements|curves|overlays">``
removal switches. Properties form: ``set.[0010,0010]PatientName=script``, ``param.X=value``,
``keep.groupXXXX``, ``keep.safeprivateelements``, ``remove.X``; ``#`` disables a line.

The parameter ``SITEID`` always holds the site's SITEID, as in the RSNA Anonymizer.

Scripts of the RSNA Anonymizer's own Python version use operations without parentheses
(``@uid``, ``@ptid``, ``@acc``, ``@hashdate``) and that program's rules: every listed
element whose script is empty is kept, every other element is removed, at every depth,
and ``en`` is not consulted. A script using any of those operations is read that way
(dialect ``rsna``); every other script with CTP's rules (dialect ``ctp``).
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from shared.deid.ctp_language import BARE_OPERATIONS, Script, ScriptSyntaxError, parse_script
from shared.deid.elements import UnknownElement, element_ref
from shared.deid.java_properties import parse_properties

REMOVAL_SWITCHES = ("privategroups", "unspecifiedelements", "curves", "overlays")


class ScriptLoadError(ValueError):
    """A script file that cannot be used; the message names the file, line and reason."""


@dataclass
class ScriptEntry:
    """One element script as written in the file."""

    line: int
    target: str  # the tag as written: "00100010", "0009[CTP]01", "PatientName"
    name: str
    enabled: bool
    text: str
    script: Script = field(default_factory=lambda: Script(()))
    tag: int = 0  # standard tag, or a literal private tag
    private: tuple[int, str, int] | None = None  # (group, creator, element byte)


@dataclass
class AnonymizerScript:
    """A loaded script: parameters, element scripts, keep and removal switches."""

    name: str
    sha256: str
    params: dict[str, str] = field(default_factory=dict)
    entries: list[ScriptEntry] = field(default_factory=list)
    keep_groups: set[int] = field(default_factory=set)
    keep_safe_private: bool = False
    remove: set[str] = field(default_factory=set)
    dialect: str = "ctp"


def load_script(path: Path, dialect: str = "auto") -> AnonymizerScript:
    """Load and check a script file; raises :class:`ScriptLoadError`."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptLoadError(f"{path.name}: not UTF-8 text ({exc.reason})") from None
    return parse_anonymizer_script(text, path.name, dialect, hashlib.sha256(data).hexdigest())


def parse_anonymizer_script(
    text: str, name: str = "script", dialect: str = "auto", sha256: str | None = None
) -> AnonymizerScript:
    """Parse a script in either format; every element script is checked now."""
    script = AnonymizerScript(name, sha256 or hashlib.sha256(text.encode()).hexdigest())
    if re.search(r"^\s*<", text, re.MULTILINE):
        _read_xml(text, script)
    else:
        _read_properties(text, script)
    uses_bare = any(
        re.search(r"@(" + "|".join(BARE_OPERATIONS) + r")(?![A-Za-z(])", e.text)
        for e in script.entries
    )
    script.dialect = ("rsna" if uses_bare else "ctp") if dialect == "auto" else dialect
    if script.dialect not in ("ctp", "rsna"):
        raise ScriptLoadError(f"{name}: unknown script dialect {dialect!r} (ctp or rsna)")
    parameters = set(script.params) | {"SITEID"}
    for entry in script.entries:
        if not entry.enabled and script.dialect == "ctp":
            continue
        try:
            _resolve_target(entry)
            entry.script = parse_script(entry.text, parameters)
        except ScriptSyntaxError as exc:
            column = f", character {exc.position + 1} of the script" if entry.text else ""
            raise ScriptLoadError(
                f"{name}, line {entry.line} ({entry.name or entry.target}){column}: {exc.reason}"
            ) from None
    return script


def _resolve_target(entry: ScriptEntry) -> None:
    target = entry.target.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", target):
        entry.tag = int(target, 16)
        return
    try:
        ref = element_ref(target)
    except UnknownElement:
        try:
            ref = element_ref(f"{target[:4]},{target[4:]}")
        except UnknownElement:
            raise ScriptSyntaxError(f"unknown element {target!r}", 0) from None
    step = ref.steps[-1]
    if len(ref.steps) != 1:
        raise ScriptSyntaxError("a script applies to one element, not a sequence path", 0)
    if step.creator is None:
        entry.tag = step.tag
    else:
        entry.private = (step.tag >> 16, step.creator, step.tag & 0xFF)


def _tag_lines(text: str) -> dict[str, list[int]]:
    """Line numbers of every <p>, <e>, <k> and <r> start tag, in file order."""
    lines: dict[str, list[int]] = {"p": [], "e": [], "k": [], "r": []}
    line, position = 1, 0
    for match in re.finditer(r"<([pekr])\b", text):
        line += text.count("\n", position, match.start())
        position = match.start()
        lines[match[1]].append(line)
    return lines


def _read_xml(text: str, script: AnonymizerScript) -> None:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise ScriptLoadError(
            f"{script.name}, line {line}, column {column + 1}: not well-formed XML"
        ) from None
    counters = {"p": 0, "e": 0, "k": 0, "r": 0}
    lines = _tag_lines(text)
    for child in root:
        kind = child.tag
        if kind not in counters:
            continue
        found = lines[kind]
        line = found[counters[kind]] if counters[kind] < len(found) else 0
        counters[kind] += 1
        enabled = child.get("en") == "T"  # CTP: anything but exactly "T" is off
        target = child.get("t", "")
        if kind == "p":
            script.params[target] = child.text or ""
        elif kind == "e":
            script.entries.append(ScriptEntry(line, target, child.get("n", ""), enabled,
                                              (child.text or "").strip()))
        elif kind == "k" and enabled:
            _keep(script, target, line)
        elif kind == "r" and enabled:
            _remove(script, target, line)


def _keep(script: AnonymizerScript, target: str, line: int) -> None:
    if target.lower().startswith("safe"):
        script.keep_safe_private = True
        return
    try:
        script.keep_groups.add(int(target.removeprefix("group"), 16))
    except ValueError:
        raise ScriptLoadError(f"{script.name}, line {line}: cannot read group {target!r}") from None


def _remove(script: AnonymizerScript, target: str, line: int) -> None:
    if target not in REMOVAL_SWITCHES:
        raise ScriptLoadError(
            f"{script.name}, line {line}: unknown removal {target!r} "
            f"(one of {', '.join(REMOVAL_SWITCHES)})"
        )
    script.remove.add(target)


def _read_properties(text: str, script: AnonymizerScript) -> None:
    for line, key, value in parse_properties(text):
        if key.startswith("set.["):
            depth, end = 0, -1
            for index in range(4, len(key)):
                depth += {"[": 1, "]": -1}.get(key[index], 0)
                if depth == 0:
                    end = index
                    break
            if end < 0:
                raise ScriptLoadError(f"{script.name}, line {line}: unbalanced '[' in {key!r}")
            script.entries.append(
                ScriptEntry(line, key[5:end], key[end + 1 :], True, value.strip())
            )
        elif key.startswith("param."):
            script.params[key[6:]] = value
        elif key.startswith("keep."):
            _keep(script, key[5:], line)
        elif key.startswith("remove."):
            _remove(script, key[7:], line)
        else:
            raise ScriptLoadError(f"{script.name}, line {line}: unknown entry {key!r}")
