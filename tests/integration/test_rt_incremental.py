"""The incremental set check of rt-relinker against the full check, on PostgreSQL.

For generated RT sets (complete, missing images, missing the structure set, dangling
references, mismatched frames of reference, several structure sets or plans, references to
another study, objects of another patient, late arrivals, duplicates, and sets of random
objects and references), in many random arrival orders with redeliveries, the status after
EVERY arrival (kind, status, object count, the problems in order) is what ``status_of``
says of the objects recorded so far (one per SOP instance UID, the first recorded: a
redelivery, or another object bearing a recorded UID, changes nothing); several
relinkers recording the same studies at once end where the full check of the recorded
objects ends, and a reader sees a consistent set at any moment; an index migrated from the
version that re-checked whole studies keeps its sets' problems and brings a study into the
state on its next arrival. Seeds are printed in the assertion messages to replay a failure.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydicom.dataset import Dataset

from services.index_api.api import api_app
from services.index_api.context import ApiContext, RateLimiter
from shared.config import load_settings
from shared.dicom.parse import parse
from shared.index.connect import open_index
from shared.index.migrations import migrate, migrations_dir
from shared.index.tokens import create_token
from shared.rt.graph import (
    TARGET_FRAME_OF_REFERENCE,
    TARGET_INSTANCE,
    TARGET_SERIES,
    TARGET_STUDY,
    ObjectNode,
    Reference,
    node_from_json,
    node_of,
)
from shared.rt.store import (
    SetStatus,
    node_to_json,
    problems_of,
    record_and_check,
    set_status,
    status_of,
)
from tests import synth

pytestmark = pytest.mark.integration

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STATE_TABLES = ("rt_object", "rt_set", "rt_set_count", "rt_set_principal", "rt_problem",
                   "rt_unlinked", "rt_link", "rt_declaration")
ORDERS_PER_SET = 8


def _nodes_of(datasets: list[Dataset]) -> list[ObjectNode]:
    nodes = []
    for ds in datasets:
        buffer = io.BytesIO()
        synth.write(ds, buffer)
        nodes.append(node_of(parse(buffer.getvalue())))
    return nodes


def _by_modality(nodes: list[ObjectNode], modality: str) -> list[ObjectNode]:
    return [n for n in nodes if n.modality == modality]


def _with_refs(node: ObjectNode, *extra: Reference) -> ObjectNode:
    return replace(node, references=(*node.references, *extra))


def _variant_sets(base: list[ObjectNode], other: list[ObjectNode]) -> dict[str, list[ObjectNode]]:
    """Named sets made from one generated RT set (``base``) and a second one (``other``,
    another patient and study)."""
    ct = _by_modality(base, "CT")
    (struct,), (plan,), (dose,) = (_by_modality(base, m) for m in ("RTSTRUCT", "RTPLAN",
                                                                    "RTDOSE"))
    study = struct.study_uid
    frame = struct.frame_of_reference_uid or ""
    sets: dict[str, list[ObjectNode]] = {"complete": base}
    sets["missing images"] = [n for n in base if n not in (ct[1], ct[3])]
    sets["missing the structure set"] = [n for n in base if n is not struct]
    sets["only the RT objects"] = [struct, plan, dose]
    sets["dangling references"] = [
        *ct,
        _with_refs(struct,
                   Reference("contour-image", "1.2.3.404", "ROIContourSequence[9]",
                             TARGET_INSTANCE, CT_IMAGE),
                   Reference("contour-image", "1.2.3.404", "ROIContourSequence[10]",
                             TARGET_INSTANCE, CT_IMAGE),
                   Reference("referenced-series", "1.2.3.405", "RTReferencedSeriesSequence[1]",
                             TARGET_SERIES),
                   Reference("roi-frame-of-reference", "1.2.3.406",
                             "StructureSetROISequence[7]", TARGET_FRAME_OF_REFERENCE)),
        _with_refs(plan, Reference("reference-image", "1.2.3.407",  # optional: may dangle
                                   "ReferencedReferenceImageSequence[0]", TARGET_INSTANCE)),
        replace(dose, references=tuple(
            replace(r, uid="1.2.3.408") if r.kind == "rt-plan" else r
            for r in dose.references)),
    ]
    moved = {ct[0].sop_instance_uid, ct[2].sop_instance_uid}
    sets["images on another frame of reference"] = [
        replace(n, frame_of_reference_uid="1.2.3.500") if n.sop_instance_uid in moved else n
        for n in base
    ]
    sets["images on two frames, no structure set"] = [
        replace(n, frame_of_reference_uid="1.2.3.501")
        if n.modality == "CT" and k % 2 else n
        for k, n in enumerate(base) if n is not struct
    ]
    second = replace(
        struct, sop_instance_uid="1.2.3.502",
        references=tuple(replace(r, uid="1.2.3.503")
                         if r.kind == "referenced-frame-of-reference" else r
                         for r in struct.references))
    third = replace(struct, sop_instance_uid="1.2.3.504")  # declares the same frame
    sets["three structure sets, two frames declared, an image off"] = [
        *[replace(n, frame_of_reference_uid="1.2.3.510") if n is ct[0] else n for n in base],
        second, third]
    sets["two plans, one linked to nothing"] = [
        *base, replace(plan, sop_instance_uid="1.2.3.505", references=())]
    sets["references to another study, objects of another patient"] = [
        *[replace(n, patient_id="OTHER") if n in ct[:2] else n for n in base if n is not struct],
        _with_refs(struct, Reference("referenced-study", "1.2.3.506",
                                     "ReferencedStudySequence[0]", TARGET_STUDY)),
    ]
    sets["images only"] = list(ct)
    sets["images and a report"] = [
        *ct,
        ObjectNode("1.2.3.507", "1.2.840.10008.5.1.4.1.1.88.33", "SR", study, "1.2.3.508",
                   None, ct[0].patient_id, ct[0].patient_name,
                   (Reference("referenced-image", ct[0].sop_instance_uid, "Evidence[0]",
                              TARGET_INSTANCE, CT_IMAGE),
                    Reference("referenced-image", "1.2.3.509", "Evidence[1]",
                              TARGET_INSTANCE, CT_IMAGE))),
    ]
    sets["objects referring to themselves, no frame"] = [
        replace(n, frame_of_reference_uid=None, references=(
            *n.references,
            Reference("referenced-instance", n.sop_instance_uid, "Self[0]", TARGET_INSTANCE),
            Reference("referenced-series", n.series_uid, "SelfSeries[0]", TARGET_SERIES)))
        for n in base[:3]
    ] + [replace(n, modality="") for n in base[3:5]]
    # Two studies interleaved, one object of the second bearing a UID of the first.
    sets["another study"] = list(other)
    sets["two studies, one UID in both"] = [
        *base, *other, replace(other[0], sop_instance_uid=ct[0].sop_instance_uid)]
    assert all(n.study_uid == study for n in base) and frame
    return sets


@pytest.fixture(scope="module")
def named_sets() -> dict[str, list[ObjectNode]]:
    base = _nodes_of(synth.make_rt_set(n_ct=6, n_rois=2, n_beams=2, rows=8, cols=8).all())
    other = _nodes_of(synth.make_rt_set(n_ct=3, n_rois=1, n_beams=1, rows=8, cols=8,
                                        patient_index=1).all())
    return _variant_sets(base, other)


def _random_set(rng: random.Random) -> list[ObjectNode]:
    """Objects of one or two studies with random modalities, frames, patients and
    references (to objects, series and frames of the set or not, of every kind)."""
    studies = ["9.1", "9.2"] if rng.random() < 0.3 else ["9.1"]
    size = rng.randint(1, 14)
    sops = [f"9.1.{k}" for k in range(size + 3)]  # three never arrive
    series = ["9.5.1", "9.5.2", "9.5.3"]
    frames = ["9.6.1", "9.6.2", "9.6.3"]
    modalities = ["CT", "CT", "CT", "RTSTRUCT", "RTSTRUCT", "RTPLAN", "RTDOSE", "MR", "",
                  "RTIMAGE"]
    kinds = [
        ("contour-image", TARGET_INSTANCE), ("referenced-series-image", TARGET_INSTANCE),
        ("structure-set", TARGET_INSTANCE), ("rt-plan", TARGET_INSTANCE),
        ("reference-image", TARGET_INSTANCE), ("referenced-instance", TARGET_INSTANCE),
        ("referenced-series", TARGET_SERIES),
        ("referenced-frame-of-reference", TARGET_FRAME_OF_REFERENCE),
        ("roi-frame-of-reference", TARGET_FRAME_OF_REFERENCE),
        ("referenced-study", TARGET_STUDY), ("referenced-patient", TARGET_STUDY),
    ]
    nodes = []
    for k in range(size):
        study = rng.choice(studies)
        references = []
        for step in range(rng.choice([0, 0, 1, 2, 4, 7])):
            kind, target = rng.choice(kinds)
            pool = {TARGET_INSTANCE: sops, TARGET_SERIES: [*series, "9.5.9"],
                    TARGET_FRAME_OF_REFERENCE: [*frames, "9.6.9"],
                    TARGET_STUDY: [*studies, "9.3"]}[target]
            references.append(Reference(kind, rng.choice(pool), f"Seq[{step}]", target,
                                        rng.choice(["", CT_IMAGE])))
        modality = rng.choice(modalities)
        if modality == "RTSTRUCT":  # structure sets declare frames, several at times
            references += [Reference("referenced-frame-of-reference", rng.choice(frames[:2]),
                                     f"Declared[{d}]", TARGET_FRAME_OF_REFERENCE)
                           for d in range(rng.choice([0, 1, 1, 2, 3]))]
        nodes.append(ObjectNode(
            rng.choice(sops[:size]) if rng.random() < 0.1 else sops[k],  # a duplicate UID
            "1.2.3", modality, study, rng.choice(series),
            rng.choice([*frames, None]), rng.choice(["P1", "P1", "P2", ""]), "",
            tuple(references)))
    return nodes


async def _reset(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute("; ".join(f"DELETE FROM {t}" for t in RT_STATE_TABLES))


async def _replay(pool: asyncpg.Pool, arrivals: list[ObjectNode], context: str) -> None:
    """Record ``arrivals`` one by one; after each, the set's status is the full check's."""
    recorded: dict[str, ObjectNode] = {}  # the first object of each SOP instance UID
    for step, node in enumerate(arrivals):
        summary = await record_and_check(pool, node, f"key/{step}")
        recorded.setdefault(node.sop_instance_uid, node)
        expected = status_of(node.study_uid, [n for n in recorded.values()
                                              if n.study_uid == node.study_uid])
        where = f"{context}, arrival {step} ({node.modality} {node.sop_instance_uid})"
        assert await set_status(pool, node.study_uid) == expected, where
        assert (summary.kind, summary.status, summary.objects, summary.problem_count) == (
            expected.kind, expected.status, expected.objects, len(expected.problems)), where


def _orders(nodes: list[ObjectNode], rng: random.Random, count: int) -> list[list[ObjectNode]]:
    orders = [list(nodes), list(reversed(nodes))]
    while len(orders) < count:
        order = list(nodes)
        rng.shuffle(order)
        if rng.random() < 0.5:  # redeliveries
            order += rng.sample(nodes, min(3, len(nodes)))
            rng.shuffle(order)
        orders.append(order)
    return orders


def _run(database_url: str, scenario: Callable[[asyncpg.Pool], object]) -> None:
    async def main() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        try:
            await scenario(pool)  # type: ignore[misc]
        finally:
            await pool.close()

    asyncio.run(main())


def test_status_after_every_arrival_is_the_full_checks_in_any_order(
    database_url: str, named_sets: dict[str, list[ObjectNode]]
) -> None:
    async def scenario(pool: asyncpg.Pool) -> None:
        for name, nodes in named_sets.items():
            seed = sum(map(ord, name))
            for k, order in enumerate(_orders(nodes, random.Random(seed), ORDERS_PER_SET)):
                await _reset(pool)
                await _replay(pool, order, f"set {name!r}, seed {seed}, order {k}")

    _run(database_url, scenario)


def test_status_of_random_sets_after_every_arrival_is_the_full_checks(
    database_url: str,
) -> None:
    async def scenario(pool: asyncpg.Pool) -> None:
        for seed in range(100):
            rng = random.Random(seed)
            nodes = _random_set(rng)
            for k, order in enumerate(_orders(nodes, rng, 3)):
                await _reset(pool)
                await _replay(pool, order, f"random set of seed {seed}, order {k}")

    _run(database_url, scenario)


def test_problems_stay_in_the_state_not_in_the_set_row(
    database_url: str, named_sets: dict[str, list[ObjectNode]]
) -> None:
    nodes = named_sets["only the RT objects"]

    async def scenario(pool: asyncpg.Pool) -> None:
        for step, node in enumerate(nodes):
            await record_and_check(pool, node, f"key/{step}")
        async with pool.acquire() as connection:
            row = await connection.fetchrow("SELECT status, problems FROM rt_set")
        assert row is not None and (row["status"], row["problems"]) == ("waiting", None)
        status = await set_status(pool, nodes[0].study_uid)
        assert status == status_of(nodes[0].study_uid, nodes)
        assert {p.code for p in status.problems} == {
            "missing-instance", "missing-object", "missing-series", "missing-link"}

    _run(database_url, scenario)


async def _recorded_nodes(connection: asyncpg.Connection, study: str) -> list[ObjectNode]:
    rows = await connection.fetch(
        "SELECT node::text AS node FROM rt_object WHERE pseudo_study_uid = $1 ORDER BY seq",
        study)
    return [node_from_json(r["node"]) for r in rows]


async def _consistent_read(pool: asyncpg.Pool, study: str) -> tuple[SetStatus | None, int]:
    """The set as one snapshot shows it, checked against the full check of the objects in
    the same snapshot; returns it and how many objects there were."""
    async with pool.acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True):
        row = await connection.fetchrow(
            "SELECT kind, status, objects, problems::text AS problems FROM rt_set"
            " WHERE pseudo_study_uid = $1", study)
        nodes = await _recorded_nodes(connection, study)
        if row is None:
            assert not nodes
            return None, 0
        problems = await problems_of(connection, study, row["problems"])
    found = SetStatus(study, row["kind"], row["status"], row["objects"], problems)
    assert found == status_of(study, nodes)
    return found, len(nodes)


def test_relinkers_recording_the_same_studies_at_once_end_at_the_full_check(
    database_url: str, named_sets: dict[str, list[ObjectNode]]
) -> None:
    rng = random.Random(5)
    arrivals = [*named_sets["images on another frame of reference"],
                *named_sets["two studies, one UID in both"][-4:],
                *named_sets["dangling references"]]
    arrivals += rng.sample(arrivals, 8)  # redelivered
    rng.shuffle(arrivals)
    studies = sorted({n.study_uid for n in arrivals})

    async def scenario(pool: asyncpg.Pool) -> None:
        pools = [await asyncpg.create_pool(database_url, min_size=2, max_size=2)
                 for _ in range(3)]
        try:
            queue: asyncio.Queue[tuple[int, ObjectNode]] = asyncio.Queue()
            for item in enumerate(arrivals):
                queue.put_nowait(item)
            done = asyncio.Event()

            async def relinker(own: asyncpg.Pool) -> None:
                while not queue.empty():
                    step, node = queue.get_nowait()
                    await record_and_check(own, node, f"key/{step}")

            async def reader() -> int:
                reads = 0
                while not done.is_set():
                    for study in studies:
                        await _consistent_read(pool, study)
                        reads += 1
                    await asyncio.sleep(0)
                return reads

            reading = asyncio.create_task(reader())
            await asyncio.gather(*(relinker(p) for p in pools for _ in range(2)))
            done.set()
            assert await reading > 0
        finally:
            for own in pools:
                await own.close()
        async with pool.acquire() as connection:
            for study in studies:
                nodes = await _recorded_nodes(connection, study)
                assert await set_status(pool, study) == status_of(study, nodes)
            recorded = await connection.fetchval("SELECT count(*) FROM rt_object")
        assert recorded == len({n.sop_instance_uid for n in arrivals})

    _run(database_url, scenario)


_OLD_RECORD = (  # what a relinker of the version before migration 0011 did
    "INSERT INTO rt_object (pseudo_sop_instance_uid, pseudo_study_uid,"
    " frame_of_reference_uid, modality, sop_class_uid, object_key, node)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING")
_OLD_SET = (
    "INSERT INTO rt_set (pseudo_study_uid, kind, status, objects, problems, checked_at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, now()) ON CONFLICT (pseudo_study_uid) DO UPDATE"
    " SET kind = EXCLUDED.kind, status = EXCLUDED.status, objects = EXCLUDED.objects,"
    " problems = EXCLUDED.problems, checked_at = now()")


async def _old_relinker(connection: asyncpg.Connection, node: ObjectNode, key: str) -> None:
    """Record and re-check the whole study, as the relinker did before migration 0011."""
    await connection.execute(_OLD_RECORD, node.sop_instance_uid, node.study_uid,
                             node.frame_of_reference_uid, node.modality, node.sop_class_uid,
                             key, node_to_json(node))
    rows = await connection.fetch(
        "SELECT node::text AS node FROM rt_object WHERE pseudo_study_uid = $1",
        node.study_uid)
    found = status_of(node.study_uid, [node_from_json(r["node"]) for r in rows])
    await connection.execute(_OLD_SET, found.study_uid, found.kind, found.status,
                             found.objects, json.dumps([asdict(p) for p in found.problems]))


def test_an_index_of_the_earlier_version_keeps_its_sets_and_catches_up(
    database_url: str, tmp_path: Path, named_sets: dict[str, list[ObjectNode]]
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(migrations_dir().glob("*.sql")):
        if path.name < "0011":
            shutil.copy(path, before)
    complete = named_sets["complete"]
    waiting = named_sets["missing images"]  # two images late
    late = [n for n in complete if n not in waiting]
    struct_first = sorted(waiting, key=lambda n: n.modality != "RTSTRUCT")
    untouched = named_sets["another study"]
    study, other = complete[0].study_uid, untouched[0].study_uid

    async def main() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await migrate(connection, before)
            for step, node in enumerate([*struct_first, *untouched]):
                await _old_relinker(connection, node, f"old/{step}")
            await migrate(connection)
        finally:
            await connection.close()
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            # Until their next arrival, the sets are what the earlier version found.
            assert await set_status(pool, study) == status_of(study, struct_first)
            assert await set_status(pool, other) == status_of(other, untouched)
            # The next arrival applies the study's objects, then its own.
            await record_and_check(pool, late[0], "new/0")
            assert await set_status(pool, study) == status_of(study, [*struct_first, late[0]])
            # An earlier relinker still running during the upgrade records the last one;
            # its redelivery to a new relinker brings it into the state.
            async with pool.acquire() as connection:
                await _old_relinker(connection, late[1], "old/late")
            final = status_of(study, [*struct_first, *late])
            assert final.status == "complete"
            assert await set_status(pool, study) == final
            await record_and_check(pool, late[1], "new/redelivered")
            assert await set_status(pool, study) == final
            async with pool.acquire() as connection:
                problems = await connection.fetchval(
                    "SELECT problems FROM rt_set WHERE pseudo_study_uid = $1", study)
                pending = await connection.fetchval(
                    "SELECT count(*) FROM rt_object WHERE pseudo_study_uid = $1"
                    " AND NOT in_state", study)
            assert (problems, pending) == (None, 0)
            assert await set_status(pool, other) == status_of(other, untouched)
        finally:
            await pool.close()

    asyncio.run(main())


def test_the_index_api_lists_each_sets_problems_as_the_full_check_does(
    database_url: str, named_sets: dict[str, list[ObjectNode]]
) -> None:
    current = named_sets["dangling references"]
    earlier = named_sets["another study"][:-1]  # recorded by the earlier version

    async def main() -> None:
        opened = await open_index(None, database_url, max_connections=2)
        try:
            for step, node in enumerate(current):
                await record_and_check(opened.pool, node, f"key/{step}")
            async with opened.pool.acquire() as connection:
                for step, node in enumerate(earlier):
                    await _old_relinker(connection, node, f"old/{step}")
                token, _ = await create_token(connection, "rt-sets", "operator", "test")
            ctx = ApiContext(settings=load_settings(), pool=opened.pool, site=opened.site,
                             store=cast(Any, None), buckets=cast(Any, None), broker=None,
                             commands=cast(Any, None), limiter=RateLimiter(60, 10))
            async with TestClient(TestServer(api_app(ctx, {}))) as client:
                answer = await client.get("/api/v1/rt-sets",
                                          headers={"Authorization": f"Bearer {token}"})
                assert answer.status == 200, await answer.text()
                items = {i["pseudo_study_uid"]: i for i in (await answer.json())["items"]}
        finally:
            await opened.close()
        for nodes in (current, earlier):
            expected = status_of(nodes[0].study_uid, nodes)
            item = items[expected.study_uid]
            assert (item["kind"], item["status"], item["objects"]) == (
                expected.kind, expected.status, expected.objects)
            assert item["problems"] == [asdict(p) for p in expected.problems]
        assert items[current[0].study_uid]["problems"]

    asyncio.run(main())
