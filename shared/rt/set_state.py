"""The incremental check of a study's set, kept in the PHI index (migration 0011).

:func:`shared.rt.store.status_of` checks a set by building the graph of all its objects.
Doing that on every arrival costs work that grows with the study, so rt-relinker instead
keeps, per study, what the full check would conclude, and updates it with each object:

- ``rt_set_count``: counters per (dimension, value): objects, objects per modality, per
  series, per frame of reference (and how many objects have one), per PatientID, the
  frames of reference the structure sets declare (counted per reference), and the problems
  listed in ``rt_problem`` per code and the objects in ``rt_unlinked`` per modality;
  ``rt_set_principal``: the most frequent frame of reference, declared frame and PatientID
  (the smallest on ties), kept as the counters go up;
- ``rt_problem``: the problems that belong to one object and do not depend on the rest
  of the set but for whether some object answers a UID: a dangling instance, series or
  frame-of-reference reference (``target``, ``uid``: the row goes when an object with that
  SOP instance UID, series or frame of reference arrives) or a reference to another study
  (it stays);
- ``rt_unlinked`` and ``rt_link``: the RTPLAN, RTDOSE and RTSTRUCT objects that make none
  of the links they must yet, and the UIDs that would make them;
- ``rt_declaration``: where each structure set first declares each frame of reference.

An arrival changes only its own rows and those waiting for its UIDs, so its cost does not
depend on the size of the study. The problems whose wording depends on the whole set (the
frame of reference, the patient, the counts) are not stored: the counters say how many
there are, and :mod:`shared.rt.set_summary` words them when the set's problems are read,
from the counters and the few rows they concern. Every detail is worded by the functions
of :mod:`shared.rt.checks`, so the result is the full check's, problem for problem.

The state of a study is a function of the set of its ``rt_object`` rows marked
``in_state``, whatever the order in which they were applied: a reference is resolved
either when its object is applied (the target is already there) or when the target is
applied (it removes the rows waiting for it). Rows not yet applied (those of an index
migrated from an earlier version, or recorded by an earlier relinker during an upgrade)
are applied by :func:`catch_up` under the study's lock before anything else. Every
function here runs on a connection holding that lock (the readers excepted).

Objects are grouped by their study, so every object of a set belongs to the set's study:
the study rule reduces to references to other studies.
"""

from __future__ import annotations

from collections import Counter

import asyncpg

from shared.rt.checks import (
    OPTIONAL_KINDS,
    Problem,
    declared_frames,
    link_candidates,
    reference_groups,
    reference_study_mismatch,
    study_references,
)
from shared.rt.graph import (
    TARGET_FRAME_OF_REFERENCE,
    TARGET_INSTANCE,
    TARGET_SERIES,
    ObjectNode,
    node_from_json,
)

# Dimensions of rt_set_count.
OBJECTS = "objects"
MODALITY = "modality"
SERIES = "series"
FRAME = "frame"
HOLDERS = "holders"  # objects that have a frame of reference
DECLARED = "declared-frame"
PATIENT = "patient"
LISTED = "problems"  # rows of rt_problem per code
UNLINKED = "unlinked"  # rows of rt_unlinked per modality

_ADD_COUNTS = (
    "INSERT INTO rt_set_count (pseudo_study_uid, dimension, value, n)"
    " SELECT $1, d, v, k FROM unnest($2::text[], $3::text[], $4::int[]) AS t(d, v, k)"
    " ON CONFLICT (pseudo_study_uid, dimension, value)"
    " DO UPDATE SET n = rt_set_count.n + EXCLUDED.n"
    " RETURNING 'count' AS role, dimension, value, n"
)

# The counts of this node's values, and the principal values before it with their counts.
_ADD_COUNTS_AND_PRINCIPALS = (
    "WITH counted AS (" + _ADD_COUNTS + ")"
    " SELECT role, dimension, value, n FROM counted"
    " UNION ALL SELECT 'principal', p.dimension, p.value, c.n FROM rt_set_principal p"
    "  JOIN rt_set_count c ON c.pseudo_study_uid = p.pseudo_study_uid"
    "  AND c.dimension = p.dimension AND c.value = p.value"
    "  WHERE p.pseudo_study_uid = $1"
)

_SET_PRINCIPALS = (
    "INSERT INTO rt_set_principal (pseudo_study_uid, dimension, value)"
    " SELECT $1, d, v FROM unnest($2::text[], $3::text[]) AS t(d, v)"
    " ON CONFLICT (pseudo_study_uid, dimension) DO UPDATE SET value = EXCLUDED.value"
)

# What waited for the object: the problems waiting for its SOP instance UID ($2), series
# ($3) and frame of reference ($4) (NULL: not the first of the set to have them) go, and
# the objects waiting for an object of its modality ($5) with its UID are linked; the
# counters of the problems and of the unlinked objects go down with them.
_RESOLVE = (
    "WITH gone AS (DELETE FROM rt_problem WHERE pseudo_study_uid = $1"
    "  AND ((target = 'instance' AND uid = $2) OR (target = 'series' AND uid = $3)"
    "   OR (target = 'frame-of-reference' AND uid = $4))"
    "  RETURNING code),"
    " linked AS (DELETE FROM rt_unlinked u WHERE u.pseudo_study_uid = $1"
    "  AND u.object_uid IN (SELECT object_uid FROM rt_link"
    "   WHERE pseudo_study_uid = $1 AND uid = $2 AND target = $5)"
    "  RETURNING u.object_uid, u.modality),"
    " dropped AS (DELETE FROM rt_link l USING linked"
    "  WHERE l.pseudo_study_uid = $1 AND l.object_uid = linked.object_uid),"
    " counted AS (SELECT 'problems' AS dimension, code AS value, count(*)::int AS k"
    "  FROM gone GROUP BY code"
    "  UNION ALL SELECT 'unlinked', modality, count(*)::int FROM linked GROUP BY modality)"
    " UPDATE rt_set_count c SET n = c.n - counted.k FROM counted"
    " WHERE c.pseudo_study_uid = $1 AND c.dimension IN ('problems', 'unlinked')"
    " AND c.dimension = counted.dimension AND c.value = counted.value"
)

# What of $2 (SOP instance UIDs), $3 (series) and $4 (frames of reference) the set holds.
_PRESENT = (
    "SELECT 'instance' AS target, pseudo_sop_instance_uid AS uid, modality FROM rt_object"
    " WHERE pseudo_study_uid = $1 AND pseudo_sop_instance_uid = ANY($2::text[]) AND in_state"
    " UNION ALL"
    " SELECT CASE dimension WHEN 'series' THEN 'series' ELSE 'frame-of-reference' END,"
    " value, '' FROM rt_set_count WHERE pseudo_study_uid = $1 AND n > 0"
    " AND ((dimension = 'series' AND value = ANY($3::text[]))"
    "  OR (dimension = 'frame' AND value = ANY($4::text[])))"
)

_ADD_PROBLEMS = (
    "INSERT INTO rt_problem (pseudo_study_uid, object_uid, code, modality, detail, target, uid)"
    " SELECT $1, $2, c, $3, d, t, u"
    " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS x(c, d, t, u)"
)

_ADD_UNLINKED = (
    "WITH unlinked AS (INSERT INTO rt_unlinked (pseudo_study_uid, object_uid, modality)"
    "  VALUES ($1, $2, $3) RETURNING 1)"
    " INSERT INTO rt_link (pseudo_study_uid, object_uid, uid, target)"
    " SELECT $1, $2, u, $4 FROM unnest($5::text[]) AS x(u)"
)

_ADD_DECLARATIONS = (
    "INSERT INTO rt_declaration (pseudo_study_uid, frame_uid, seq, object_uid, modality, path)"
    " SELECT $1, f, $2, $3, $4, p FROM unnest($5::text[], $6::text[]) AS x(f, p)"
)

# Dimensions whose most frequent value (the smallest, as Python compares strings, on ties)
# the wording needs. Their counters never go down, so the principal value can only become
# one whose counter went up.
_PRINCIPAL_DIMENSIONS = (FRAME, DECLARED, PATIENT)


def _problem_row(problem: Problem, target: str | None, uid: str | None) -> tuple[
        str, str, str | None, str | None]:
    return problem.code, problem.detail, target, uid


async def apply(connection: asyncpg.Connection, study: str, node: ObjectNode,
                seq: int) -> None:
    """Add the object ``node`` (rt_object.seq ``seq``, already marked ``in_state``) to the
    state of ``study``: its counters, the problems and links waiting for it, its own."""
    if node.study_uid != study:
        raise ValueError("an object is recorded in the set of its own study")
    declared = Counter(r.uid for r in declared_frames(node))
    increments: Counter[tuple[str, str]] = Counter({
        (OBJECTS, ""): 1, (MODALITY, node.modality): 1, (SERIES, node.series_uid): 1,
        (PATIENT, node.patient_id): 1,
    })
    frame = node.frame_of_reference_uid
    if frame is not None:
        increments[(HOLDERS, "")] += 1
        increments[(FRAME, frame)] += 1
    for uid, count in declared.items():
        increments[(DECLARED, uid)] += count
    keys = list(increments)
    rows = await connection.fetch(
        _ADD_COUNTS_AND_PRINCIPALS, study, [d for d, _ in keys], [v for _, v in keys],
        [increments[k] for k in keys])
    counted = {(r["dimension"], r["value"]): int(r["n"]) for r in rows if r["role"] == "count"}
    await _update_principals(connection, study, counted, [
        (r["dimension"], r["value"], int(r["n"])) for r in rows if r["role"] == "principal"])

    # Its series and frame of reference answer references when it is the first to have them.
    new_series = counted[(SERIES, node.series_uid)] == 1
    new_frame = frame is not None and counted[(FRAME, frame)] == 1
    await connection.execute(
        _RESOLVE, study, node.sop_instance_uid, node.series_uid if new_series else None,
        frame if new_frame else None, node.modality)
    await _own_references(connection, study, node)
    if declared:
        first_paths: dict[str, str] = {}
        for reference in declared_frames(node):
            first_paths.setdefault(reference.uid, reference.path)
        await connection.execute(
            _ADD_DECLARATIONS, study, seq, node.sop_instance_uid, node.modality,
            list(first_paths), list(first_paths.values()))


async def _own_references(connection: asyncpg.Connection, study: str,
                          node: ObjectNode) -> None:
    """Record the problems of ``node``'s own references that the set does not answer yet,
    and whether it makes its link."""
    groups = reference_groups(node, OPTIONAL_KINDS)
    wanted = link_candidates(node)
    rows = [_problem_row(reference_study_mismatch(node, r, study), None, None)
            for r in study_references(node) if r.uid != study]
    if groups or wanted is not None:
        by_target: dict[str, list[str]] = {
            TARGET_INSTANCE: [], TARGET_SERIES: [], TARGET_FRAME_OF_REFERENCE: []}
        for target, uid, _ in groups:
            by_target[target].append(uid)
        if wanted is not None:  # the UIDs that would link it, looked up with the others
            instances = dict.fromkeys([*by_target[TARGET_INSTANCE], *wanted[1]])
            by_target[TARGET_INSTANCE] = list(instances)
        found = await connection.fetch(
            _PRESENT, study, by_target[TARGET_INSTANCE], by_target[TARGET_SERIES],
            by_target[TARGET_FRAME_OF_REFERENCE])
        present = {(r["target"], r["uid"]) for r in found}
        modality_of = {r["uid"]: r["modality"] for r in found if r["target"] == TARGET_INSTANCE}
        rows += [_problem_row(problem, target, uid) for target, uid, problem in groups
                 if (target, uid) not in present]
        if wanted is not None:
            link, candidates = wanted
            if not any(modality_of.get(uid) == link.target for uid in candidates):
                await connection.execute(_ADD_UNLINKED, study, node.sop_instance_uid,
                                         node.modality, link.target, candidates)
                await _count(connection, study, {(UNLINKED, node.modality): 1})
    if rows:
        codes, details, targets, uids = (list(c) for c in zip(*rows, strict=True))
        await connection.execute(_ADD_PROBLEMS, study, node.sop_instance_uid, node.modality,
                                 codes, details, targets, uids)
        await _count(connection, study, Counter((LISTED, c) for c in codes))


async def _count(connection: asyncpg.Connection, study: str,
                 increments: dict[tuple[str, str], int]) -> None:
    keys = list(increments)
    await connection.execute(
        _ADD_COUNTS, study, [d for d, _ in keys], [v for _, v in keys],
        [increments[k] for k in keys])


async def _update_principals(
    connection: asyncpg.Connection, study: str, counted: dict[tuple[str, str], int],
    before: list[tuple[str, str, int]],
) -> None:
    """Make the principal value of each dimension the most frequent once an object raised
    the counters ``counted`` (their new counts); ``before``: the principal values before
    it, with their counts then."""
    principals = {dimension: (value, n) for dimension, value, n in before}
    changed: dict[str, str] = {}
    for dimension in _PRINCIPAL_DIMENSIONS:
        counts = {value: n for (d, value), n in counted.items() if d == dimension}
        if not counts:
            continue
        if dimension in principals:  # its count then, when this object did not raise it
            counts.setdefault(*principals[dimension])
        best = min(counts, key=lambda value: (-counts[value], value))
        if dimension not in principals or best != principals[dimension][0]:
            changed[dimension] = best
    if changed:
        await connection.execute(_SET_PRINCIPALS, study, list(changed), list(changed.values()))


async def catch_up(connection: asyncpg.Connection, study: str) -> int:
    """Apply the objects of ``study`` recorded but not yet in its state, in the order they
    were recorded; returns how many."""
    rows = await connection.fetch(
        "UPDATE rt_object SET in_state = true WHERE pseudo_study_uid = $1 AND NOT in_state"
        " RETURNING seq, node::text AS node", study)
    for row in sorted(rows, key=lambda r: int(r["seq"])):
        await apply(connection, study, node_from_json(row["node"]), int(row["seq"]))
    return len(rows)
