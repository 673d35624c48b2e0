"""The RT batch's work on single files, done in worker processes: reading an input file
for the check, de-identifying one object of a set into its output folder.

Nothing here touches the PHI index: a worker gets everything from the :class:`SetPlan`
the parent made, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared.deid.context import Pseudonyms
from shared.deid.engine import Engine, identity
from shared.deid.pseudonymizer import instance_record
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import DicomObject, parse
from shared.index.phi_index import InstanceRecord, Site
from shared.rt.batch_rules import PATIENT_BIRTH_DATE, batch_rules, output_name
from shared.rt.graph import ObjectNode, node_of
from shared.storage.keys import contained

PATIENT_AGE = 0x00101010
STUDY_DATE = 0x00080020
ISSUER_OF_PATIENT_ID = 0x00100021
RT_PLAN_LABEL = 0x300A0002


@dataclass(frozen=True)
class Scanned:
    """One input file as read while checking its set: its node, or why it is not used,
    and the original values the batch needs (PHI: never written to the report)."""

    path: str
    error: str = ""
    node: ObjectNode | None = None
    issuer: str = ""
    study_date: str = ""
    age: str = ""
    birth_date: str = ""
    plan_label: str = ""


@dataclass(frozen=True)
class SetPlan:
    """What a worker needs to de-identify the objects of one set, the same in any process."""

    new_id: str
    patient_name: str
    date_offset_days: int
    birth_date: str
    machine_name: str | None
    site_id: str
    secret: bytes


@dataclass(frozen=True)
class Written:
    """One de-identified object: its output node and index record, or the error."""

    set_number: int
    position: int
    name: str = ""
    error: str = ""
    node: ObjectNode | None = None
    record: InstanceRecord | None = None
    # Original study UID, date and accession, then the new study UID and date.
    study: tuple[str, str, str, str, str] = ("", "", "", "", "")


# One object to de-identify: set number, position in the set, source file, output folder.
Task = tuple[int, int, str, str, SetPlan]


def scan(path_text: str) -> Scanned:
    """Read one file: its reference node and the original values the batch needs."""
    path = Path(path_text)
    try:
        obj = parse(path.read_bytes())
    except RejectedObject as exc:
        return Scanned(path_text, error=f"ignored, not DICOM: {exc.reason}")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return Scanned(path_text, error=f"ignored, unreadable: {reason}")
    get = obj.get_text
    return Scanned(
        path_text,
        node=node_of(obj),
        issuer=get(ISSUER_OF_PATIENT_ID) or "",
        study_date=get(STUDY_DATE) or "",
        age=get(PATIENT_AGE) or "",
        birth_date=get(PATIENT_BIRTH_DATE) or "",
        plan_label=get(RT_PLAN_LABEL) or "",
    )


def scan_chunk(chunk: list[str]) -> list[Scanned]:
    return [scan(p) for p in chunk]


_engines: dict[tuple[bytes, str, str | None], Engine] = {}


def _engine(plan: SetPlan) -> Engine:
    """The engine of a plan's rules, built once per process."""
    key = (plan.secret, plan.birth_date, plan.machine_name)
    found = _engines.get(key)
    if found is None:
        found = Engine(batch_rules(plan.birth_date, plan.machine_name), plan.secret)
        _engines[key] = found
    return found


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename; an identical file is left alone."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # a link left there is removed, never written through
    temporary.write_bytes(data)
    os.replace(temporary, path)


def deidentify(task: Task) -> Written:
    """De-identify one object of a set into its output folder."""
    set_number, position, source, folder, plan = task
    try:
        obj: DicomObject = parse(Path(source).read_bytes())
        ident = identity(obj)
        site = Site(plan.site_id, plan.secret)
        pseudonyms = Pseudonyms(
            patient_id=plan.new_id,
            patient_name=plan.patient_name,
            date_offset_days=plan.date_offset_days,
            accession_number=site.accession_pseudonym(
                ident.study_instance_uid, ident.accession_number.strip()
            ),
        )
        engine = _engine(plan)
        result = engine.deidentify(obj, pseudonyms)
        name = output_name(result.modality, result.sop_instance_uid)
        _write(contained(Path(folder), name, "output file"), result.data)
        node = node_of(parse(result.data))
    except RejectedObject as exc:
        return Written(set_number, position, error=f"{Path(source).name}: {exc.reason}")
    except OSError as exc:
        return Written(set_number, position,
                       error=f"{Path(source).name}: {exc.strerror or exc.__class__.__name__}")
    except Exception as exc:
        # One odd object must not stop the batch; the message could quote its values.
        return Written(set_number, position,
                       error=f"{Path(source).name}: unexpected {exc.__class__.__name__}")
    record = instance_record(ident, result, engine.rules)
    study = (ident.study_instance_uid, ident.study_date, ident.accession_number,
             result.study_instance_uid, result.study_date)
    return Written(set_number, position, name, node=node, record=record, study=study)


def deidentify_chunk(chunk: list[Task]) -> list[Written]:
    return [deidentify(task) for task in chunk]
