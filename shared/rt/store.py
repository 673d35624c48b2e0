"""The reference graph of de-identified objects in the PHI index, and set status.

rt-relinker records each de-identified object's node in ``rt_object`` and updates the
incremental state of its study (:mod:`shared.rt.set_state`) under a per-study advisory
lock, so that an arrival costs the same in a study of 30 objects or of 3,000, and the
status after every arrival, in any order and with any number of relinkers, is what
:func:`status_of` (the full check of every node recorded so far) says. ``rt_set`` keeps
each study's kind, status and object count for SQL readers; its problems are ``NULL``
there (a set's problems can number thousands and change with every arrival) and are
read with :func:`set_status` or :func:`problems_of`. A row with a problems list was written
by a relinker of an earlier version (the full check at that time) and stays what it says
until the study's next arrival brings the study's objects into the state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from shared.rt import set_state, set_summary
from shared.rt.checks import (
    RT_MODALITIES,
    WAITING_CODES,
    Problem,
    check_rt_set,
    check_set,
)
from shared.rt.graph import ObjectNode, ReferenceGraph, node_from_json, node_to_json

__all__ = [
    "RT_MODALITIES",
    "WAITING_CODES",
    "SetStatus",
    "SetSummary",
    "node_from_json",
    "node_to_json",
    "problems_of",
    "record_and_check",
    "set_status",
    "status_of",
]


@dataclass(frozen=True, slots=True)
class SetStatus:
    study_uid: str
    kind: str  # "rt" or "other"
    status: str  # complete, waiting, inconsistent
    objects: int
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class SetSummary:
    """What an arrival leaves a set at: :class:`SetStatus` with the number of problems in
    place of the problems (read them with :func:`set_status`)."""

    study_uid: str
    kind: str
    status: str
    objects: int
    problem_count: int


def status_of(study_uid: str, nodes: list[ObjectNode]) -> SetStatus:
    """Check a study's objects: an RT set (any RT object) by the RT rules, else the
    general reference rules. The full check, of every node: what the incremental state
    must agree with."""
    graph = ReferenceGraph.from_nodes(nodes)
    is_rt = any(node.modality in RT_MODALITIES for node in nodes)
    problems = check_rt_set(graph) if is_rt else check_set(graph)
    if not problems:
        status = "complete"
    elif all(p.code in WAITING_CODES for p in problems):
        status = "waiting"
    else:
        status = "inconsistent"
    return SetStatus(study_uid, "rt" if is_rt else "other", status, len(nodes),
                     tuple(problems))


_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rt-set'), hashtext($1))"

# Inserted already applied (it is, before the transaction ends); the study has rows not
# yet in its state when an index migrated from an earlier version has them.
_RECORD = (
    "WITH recorded AS (INSERT INTO rt_object (pseudo_sop_instance_uid, pseudo_study_uid,"
    "  frame_of_reference_uid, modality, sop_class_uid, object_key, node, in_state)"
    "  VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, true) ON CONFLICT DO NOTHING"
    "  RETURNING seq)"
    " SELECT (SELECT seq FROM recorded) AS seq, EXISTS (SELECT 1 FROM rt_object"
    "  WHERE pseudo_study_uid = $2 AND NOT in_state) AS pending"
)


async def record_and_check(
    pool: asyncpg.Pool, node: ObjectNode, object_key: str
) -> SetSummary:
    """Record ``node`` (again: nothing changes) and bring its study's set up to date;
    returns the set's summary. The work does not depend on the size of the study (but
    for the first arrival in a study recorded by an earlier version, which applies the
    study's objects once)."""
    study = node.study_uid
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(_LOCK, study)
        row = await connection.fetchrow(
            _RECORD, node.sop_instance_uid, study, node.frame_of_reference_uid,
            node.modality, node.sop_class_uid, object_key, node_to_json(node))
        assert row is not None
        if row["pending"]:
            await set_state.catch_up(connection, study)
        if row["seq"] is not None:
            await set_state.apply(connection, study, node, int(row["seq"]))
        found = await set_summary.summary(connection, study)
        await connection.execute(
            "INSERT INTO rt_set (pseudo_study_uid, kind, status, objects, problems,"
            " checked_at) VALUES ($1, $2, $3, $4, NULL, now())"
            " ON CONFLICT (pseudo_study_uid) DO UPDATE SET kind = EXCLUDED.kind,"
            " status = EXCLUDED.status, objects = EXCLUDED.objects, problems = NULL,"
            " checked_at = now()",
            study, found.kind, found.status, found.objects)
    return SetSummary(study, found.kind, found.status, found.objects, found.problem_count)


async def problems_of(connection: asyncpg.Connection, study_uid: str,
                      stored: str | None) -> tuple[Problem, ...]:
    """The problems of a study's set given its ``rt_set.problems`` text ``stored``: that
    list when there is one (written by an earlier version), else the problems of its
    state. Call it in the transaction that read ``stored``, for a consistent answer."""
    if stored is not None:
        return tuple(Problem(**p) for p in json.loads(stored))
    found = await set_summary.summary(connection, study_uid)
    return tuple(await set_summary.problems(connection, found))


async def set_status(pool: asyncpg.Pool, study_uid: str) -> SetStatus | None:
    """The last recorded status of a study's set, with its problems."""
    async with pool.acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True):
        row = await connection.fetchrow(
            "SELECT kind, status, objects, problems::text AS problems FROM rt_set"
            " WHERE pseudo_study_uid = $1",
            study_uid,
        )
        if row is None:
            return None
        problems = await problems_of(connection, study_uid, row["problems"])
    return SetStatus(study_uid, row["kind"], row["status"], row["objects"], problems)

