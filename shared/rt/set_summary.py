"""Reading the incremental state of a study's set (:mod:`shared.rt.set_state`): its
summary (kind, status, object and problem counts) from the counters alone, and its
problems, the stored ones and those worded from the counters and the few rows they
concern, in the order of the full check. Nothing here writes, so the index API's role may
call it; call it in one transaction (repeatable read) for a consistent answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from shared.rt.checks import (
    LINKS,
    RT_MODALITIES,
    RT_SET_MODALITIES,
    WAITING_CODES,
    Problem,
    common_reason,
    declared_reason,
    frame_mismatch,
    missing_link,
    missing_object,
    patient_mismatch,
    sort_problems,
    too_many_objects,
)
from shared.rt.set_state import (
    DECLARED,
    FRAME,
    HOLDERS,
    LISTED,
    MODALITY,
    OBJECTS,
    PATIENT,
    UNLINKED,
)

# The counters the status needs, the principal values with their counts, and how many
# objects have the declared frame of reference.
_SUMMARY = (
    "SELECT dimension, value, n FROM rt_set_count WHERE pseudo_study_uid = $1"
    "  AND dimension IN ('objects', 'holders', 'modality', 'problems', 'unlinked')"
    " UNION ALL SELECT 'principal ' || p.dimension, p.value, c.n FROM rt_set_principal p"
    "  JOIN rt_set_count c ON c.pseudo_study_uid = p.pseudo_study_uid"
    "  AND c.dimension = p.dimension AND c.value = p.value WHERE p.pseudo_study_uid = $1"
    " UNION ALL SELECT 'declared frame', c.value, c.n FROM rt_set_principal p"
    "  JOIN rt_set_count c ON c.pseudo_study_uid = p.pseudo_study_uid"
    "  AND c.dimension = 'frame' AND c.value = p.value"
    "  WHERE p.pseudo_study_uid = $1 AND p.dimension = 'declared-frame'"
)


@dataclass(frozen=True, slots=True)
class Summary:
    """What the counters of a study say: the kind and status of its set, its objects, how
    many problems of each code it has, and the principal values the wording needs."""

    study_uid: str
    kind: str
    status: str
    objects: int
    problem_counts: dict[str, int] = field(default_factory=dict)
    expected_frame: str | None = None
    declared: bool = False
    expected_frame_count: int = 0
    patient: str = ""
    patient_count: int = 0
    modalities: dict[str, int] = field(default_factory=dict)
    unlinked: dict[str, int] = field(default_factory=dict)

    @property
    def problem_count(self) -> int:
        return sum(self.problem_counts.values())


def summarize(study: str, rows: list[tuple[str, str, int]]) -> Summary:
    """The summary of ``study`` from the rows of the summary query: (dimension, value, n)."""
    scalars: dict[str, int] = {}
    modalities: dict[str, int] = {}
    listed: dict[str, int] = {}
    unlinked: dict[str, int] = {}
    principal: dict[str, tuple[str, int]] = {}
    declared_frame_count = 0
    for dimension, value, n in rows:
        if dimension == MODALITY:
            modalities[value] = n
        elif dimension == LISTED:
            listed[value] = n
        elif dimension == UNLINKED:
            unlinked[value] = n
        elif dimension.startswith("principal "):
            principal[dimension.removeprefix("principal ")] = (value, n)
        elif dimension == "declared frame":
            declared_frame_count = n
        else:
            scalars[dimension] = n
    objects, holders = scalars.get(OBJECTS, 0), scalars.get(HOLDERS, 0)
    counts: Counter[str] = Counter({code: n for code, n in listed.items() if n})

    expected: str | None = None
    expected_count = 0
    declared = DECLARED in principal
    if declared:
        expected, expected_count = principal[DECLARED][0], declared_frame_count
    elif FRAME in principal:
        expected, expected_count = principal[FRAME]
    if expected is not None and holders > expected_count:
        counts["frame-of-reference-mismatch"] += holders - expected_count
    patient, patient_count = principal.get(PATIENT, ("", 0))
    if objects > patient_count:
        counts["patient-mismatch"] += objects - patient_count

    is_rt = any(n > 0 and m in RT_MODALITIES for m, n in modalities.items())
    if is_rt:
        if not modalities.get("CT"):
            counts["missing-object"] += 1
        for modality in RT_SET_MODALITIES:
            found = modalities.get(modality, 0)
            if not found:
                counts["missing-object"] += 1
            elif found > 1:
                counts["too-many-objects"] += 1
        for modality, n in unlinked.items():
            link = LINKS[modality]
            if n and (not link.only_if_target or modalities.get(link.target)):
                counts["missing-link"] += n
    if not counts:
        status = "complete"
    elif all(code in WAITING_CODES for code in counts):
        status = "waiting"
    else:
        status = "inconsistent"
    return Summary(study, "rt" if is_rt else "other", status, objects, dict(counts),
                   expected, declared, expected_count, patient, patient_count, modalities,
                   unlinked)


async def summary(connection: asyncpg.Connection, study: str) -> Summary:
    """The kind, status, object and problem counts of ``study``'s set, from its counters."""
    rows = await connection.fetch(_SUMMARY, study)
    return summarize(study, [(r["dimension"], r["value"], int(r["n"])) for r in rows])


async def problems(connection: asyncpg.Connection, found: Summary) -> list[Problem]:
    """Every problem of the set ``found`` summarizes, in the full check's order: the stored
    ones and those worded from the counters and the rows they concern."""
    study = found.study_uid
    counts = found.problem_counts
    result = [Problem(r["code"], r["object_uid"], r["modality"], r["detail"])
              for r in await connection.fetch(
                  "SELECT code, object_uid, modality, detail FROM rt_problem"
                  " WHERE pseudo_study_uid = $1", study)]
    if counts.get("frame-of-reference-mismatch") and found.expected_frame is not None:
        expected = found.expected_frame
        if found.declared:
            source = await connection.fetchrow(
                "SELECT object_uid, modality, path FROM rt_declaration"
                " WHERE pseudo_study_uid = $1 AND frame_uid = $2 ORDER BY seq LIMIT 1",
                study, expected)
            assert source is not None
            reason = declared_reason(source["modality"], source["object_uid"],
                                     source["path"], expected)
        else:
            reason = common_reason(found.expected_frame_count, expected)
        rows = await connection.fetch(
            "SELECT pseudo_sop_instance_uid AS uid, modality, frame_of_reference_uid AS frame"
            " FROM rt_object WHERE pseudo_study_uid = $1 AND in_state"
            " AND (frame_of_reference_uid < $2 OR frame_of_reference_uid > $2)",
            study, expected)
        result += [frame_mismatch(r["uid"], r["modality"], r["frame"], reason) for r in rows]
    if counts.get("patient-mismatch"):
        rows = await connection.fetch(
            "SELECT pseudo_sop_instance_uid AS uid, modality FROM rt_object"
            " WHERE pseudo_study_uid = $1 AND in_state AND node->>'patient_id' <> $2",
            study, found.patient)
        result += [patient_mismatch(r["uid"], r["modality"], found.patient_count)
                   for r in rows]
    if found.kind == "rt":
        result += await _rt_problems(connection, found)
    return sort_problems(result)


async def _rt_problems(connection: asyncpg.Connection, found: Summary) -> list[Problem]:
    """The count and link problems of an RT set."""
    result: list[Problem] = []
    modalities = found.modalities
    if not modalities.get("CT"):
        result.append(missing_object("CT"))
    for modality in RT_SET_MODALITIES:
        n = modalities.get(modality, 0)
        if not n:
            result.append(missing_object(modality))
        elif n > 1:
            uids = await connection.fetch(
                "SELECT pseudo_sop_instance_uid AS uid FROM rt_object"
                " WHERE pseudo_study_uid = $1 AND modality = $2 AND in_state",
                found.study_uid, modality)
            result.append(too_many_objects(modality, (r["uid"] for r in uids)))
    if found.problem_counts.get("missing-link"):
        rows = await connection.fetch(
            "SELECT object_uid, modality FROM rt_unlinked WHERE pseudo_study_uid = $1",
            found.study_uid)
        for row in rows:
            link = LINKS[row["modality"]]
            if not link.only_if_target or modalities.get(link.target):
                result.append(missing_link(row["object_uid"], row["modality"]))
    return result
