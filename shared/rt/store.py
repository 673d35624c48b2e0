"""The reference graph of de-identified objects in the PHI index, and set status.

rt-relinker records each de-identified object's node, then re-checks its study under a
per-study advisory lock, reading every node committed so far: whichever process checks
last sees every object, so the status converges to the same answer in any arrival order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from shared.rt.checks import Problem, check_rt_set, check_set
from shared.rt.graph import ObjectNode, Reference, ReferenceGraph

RT_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD"})
# Problems that more objects can cure: the set is waiting, not inconsistent.
WAITING_CODES = frozenset({
    "missing-instance", "missing-object", "missing-series", "missing-link",
    "frame-of-reference-unknown",
})


@dataclass(frozen=True, slots=True)
class SetStatus:
    study_uid: str
    kind: str  # "rt" or "other"
    status: str  # complete, waiting, inconsistent
    objects: int
    problems: tuple[Problem, ...]


def node_to_json(node: ObjectNode) -> str:
    return json.dumps(asdict(node))


def node_from_json(text: str) -> ObjectNode:
    data: dict[str, Any] = json.loads(text)
    references = tuple(Reference(**r) for r in data.pop("references"))
    return ObjectNode(**data, references=references)


def status_of(study_uid: str, nodes: list[ObjectNode]) -> SetStatus:
    """Check a study's objects: an RT set (any RT object) by the RT rules, else the
    general reference rules."""
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


async def record_and_check(
    pool: asyncpg.Pool, node: ObjectNode, object_key: str
) -> SetStatus:
    """Record ``node`` (again: nothing changes) and re-check its study."""
    async with pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO rt_object (pseudo_sop_instance_uid, pseudo_study_uid,"
            " frame_of_reference_uid, modality, sop_class_uid, object_key, node)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING",
            node.sop_instance_uid, node.study_uid, node.frame_of_reference_uid,
            node.modality, node.sop_class_uid, object_key, node_to_json(node),
        )
        async with connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext('rt-set'), hashtext($1))",
                node.study_uid,
            )
            rows = await connection.fetch(
                "SELECT node::text AS node FROM rt_object WHERE pseudo_study_uid = $1",
                node.study_uid,
            )
            result = status_of(node.study_uid, [node_from_json(r["node"]) for r in rows])
            await connection.execute(
                "INSERT INTO rt_set (pseudo_study_uid, kind, status, objects, problems,"
                " checked_at) VALUES ($1, $2, $3, $4, $5::jsonb, now())"
                " ON CONFLICT (pseudo_study_uid) DO UPDATE SET kind = EXCLUDED.kind,"
                " status = EXCLUDED.status, objects = EXCLUDED.objects,"
                " problems = EXCLUDED.problems, checked_at = now()",
                result.study_uid, result.kind, result.status, result.objects,
                json.dumps([asdict(p) for p in result.problems]),
            )
    return result


async def set_status(pool: asyncpg.Pool, study_uid: str) -> SetStatus | None:
    """The last recorded status of a study's set."""
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT kind, status, objects, problems::text AS problems FROM rt_set"
            " WHERE pseudo_study_uid = $1",
            study_uid,
        )
    if row is None:
        return None
    problems = tuple(Problem(**p) for p in json.loads(row["problems"]))
    return SetStatus(study_uid, row["kind"], row["status"], row["objects"], problems)
