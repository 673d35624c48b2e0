"""Deterministic synthetic DICOM objects with planted PHI.

Used by the test suite and by the benchmarks. Every object is built from
scratch with pydicom; all identifying values come from a :class:`PHIValues`
instance (``PHI`` for patient 0, :func:`phi_for` for other patients), so tests
can search output bytes for :data:`PHI_STRINGS` and check that nothing leaked.

Nothing here is random: UIDs are derived by hashing their inputs below
:data:`UID_ROOT`, pixel data are fixed patterns, so two runs produce
byte-identical files.

Pixel data are held in the byte order of the dataset's Transfer Syntax. Use
:func:`write` (not ``Dataset.save_as``) to change the Transfer Syntax of an
object, it swaps the pixel bytes when the endianness changes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

__all__ = [
    "COMPREHENSIVE_SR_STORAGE",
    "CT_IMAGE_STORAGE",
    "PHI",
    "PHI_STRINGS",
    "PRIVATE_CREATOR",
    "PRIVATE_GROUP",
    "RT_DOSE_STORAGE",
    "RT_PLAN_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "UID_ROOT",
    "PHIValues",
    "RTSet",
    "make_ct_series",
    "make_rt_set",
    "make_sr",
    "original_uids",
    "phi_for",
    "phi_strings",
    "plant_phi",
    "uid_for",
    "walk",
    "write",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

UID_ROOT = "1.2.826.0.1.3680043.9.7133."
"""Root of every UID made here (object UIDs are ``UID_ROOT + "2." + digits``)."""

IMPLEMENTATION_CLASS_UID = UID(UID_ROOT + "1.1")
IMPLEMENTATION_VERSION_NAME = "SYNTHDCM_1"
DICOM_REGISTRY_PREFIX = "1.2.840.10008."

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
RT_STRUCTURE_SET_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")
RT_PLAN_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.5")
RT_DOSE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.2")
COMPREHENSIVE_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.33")
DETACHED_PATIENT_MANAGEMENT = UID("1.2.840.10008.3.1.2.1.1")

SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "QUILLON PRIVATE"

MANUFACTURER = "Synthetic Imaging Works"
CT_MODEL = "SynthCT 64"
TPS_MODEL = "SynthPlan"
TREATMENT_MACHINE = "SYNLINAC1"


# --------------------------------------------------------------------------
# Planted identifying values
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PHIValues:
    """Identifying values planted into synthetic objects.

    Every string is distinctive (invented words, ``QX``/``Quillon`` markers)
    so it can be searched for in output bytes without false positives.
    ``patient_age``, ``patient_sex``, ``patient_weight`` and ``patient_size``
    are planted too but are kept by the de-identification profile, so they
    are not part of :meth:`strings`.
    """

    # Patient
    patient_name: str = "Zyxwerth^Quillonia^Marve"
    other_patient_names: str = "Zyxwerth^Quillie"
    patient_mother_birth_name: str = "Oberflinck^Ysolde"
    patient_id: str = "PID-7734-QX"
    other_patient_ids: tuple[str, ...] = ("OPID-5521-QX", "MRN-4410-QX")
    issuer_of_patient_id: str = "HOSPITAL-ISSUER-QQ"
    birth_date: str = "19610417"
    patient_address: str = "12 Quillon Lane, Springfield"
    patient_telephone: str = "555-0199-321"
    # Study / request
    accession_number: str = "ACC99887766"
    study_id: str = "STUDYID-QX-1"
    requested_procedure_id: str = "RPID-QX-3307"
    scheduled_procedure_step_id: str = "SPSID-QX-5512"
    performed_procedure_step_id: str = "PPSID-QX-6613"
    admission_id: str = "ADM-QX-77120"
    # Dates and times
    study_date: str = "20190314"
    series_date: str = "20190315"
    acquisition_date: str = "20190314"
    content_date: str = "20190316"
    study_time: str = "095512.2231"
    series_time: str = "100247.8812"
    acquisition_time: str = "101523.123456"
    content_time: str = "103349.5076"
    acquisition_datetime: str = "20190314101523.123456"
    # Institution and equipment
    institution_name: str = "Saint Quillon Memorial Hospital"
    institution_address: str = "77 Quillon Road, North Quillonshire"
    department_name: str = "Quillon Radiation Oncology"
    station_name: str = "QUILLON-CT-STN"
    device_serial_number: str = "SN-QX-99812"
    source_ae_title: str = "QUILLONAE"
    # People
    referring_physician: str = "Drofnats^Yelrah"
    performing_physician: str = "Vortigan^Ysmelda"
    operators_name: str = "Pellacrun^Oswix"
    physician_of_record: str = "Harrowmere^Tibald"
    requesting_physician: str = "Kessendrap^Ulvina"
    reading_physician: str = "Morrowgast^Elphin"
    # Kept by the profile (not in strings())
    patient_age: str = "057Y"
    patient_sex: str = "F"
    patient_weight: str = "68.5"
    patient_size: str = "1.64"

    # Free text, each containing the patient name and ID
    @property
    def image_comments(self) -> str:
        return f"Follow-up of {self.patient_name} ({self.patient_id}), compare with prior"

    @property
    def study_comments(self) -> str:
        return f"Planning CT for {self.patient_name}, record {self.patient_id}"

    @property
    def additional_patient_history(self) -> str:
        return f"{self.patient_name} ({self.patient_id}): lobectomy 2015, no contrast allergy"

    @property
    def patient_comments(self) -> str:
        family, given = self.patient_name.split("^")[:2]
        return (
            f"Patient {self.patient_name} ({given} {family}), ID {self.patient_id}, "
            "prefers morning slots"
        )

    @property
    def person_names(self) -> tuple[str, ...]:
        return (
            self.patient_name,
            self.other_patient_names,
            self.patient_mother_birth_name,
            self.referring_physician,
            self.performing_physician,
            self.operators_name,
            self.physician_of_record,
            self.requesting_physician,
            self.reading_physician,
        )

    @property
    def dates(self) -> tuple[str, ...]:
        """Every DA value planted (original dates)."""
        return (
            self.birth_date,
            self.study_date,
            self.series_date,
            self.acquisition_date,
            self.content_date,
        )

    def strings(self) -> list[bytes]:
        """Every planted identifying value, ASCII-encoded, without duplicates."""
        values: list[str] = []
        for name in self.person_names:
            values.append(name)
            values.extend(part for part in name.split("^") if len(part) >= 5)
        values += [
            self.patient_id,
            *self.other_patient_ids,
            self.issuer_of_patient_id,
            self.patient_address,
            self.patient_telephone,
            self.accession_number,
            self.study_id,
            self.requested_procedure_id,
            self.scheduled_procedure_step_id,
            self.performed_procedure_step_id,
            self.admission_id,
            *self.dates,
            # Times of day are kept by the RICORD protocol (only dates move), so they are
            # not listed; the date part of the date-time is.
            self.acquisition_datetime,
            self.institution_name,
            self.institution_address,
            self.department_name,
            self.station_name,
            self.device_serial_number,
            self.source_ae_title,
            self.image_comments,
            self.study_comments,
            self.additional_patient_history,
            self.patient_comments,
        ]
        seen: dict[bytes, None] = {}
        for value in values:
            seen.setdefault(value.encode("ascii"), None)
        return list(seen)


PHI = PHIValues()
"""Planted values of patient 0."""

PHI_STRINGS: list[bytes] = PHI.strings()
"""Every planted value of :data:`PHI` as it appears in a file (ASCII)."""

_FAMILY_NAMES = (
    "Zyxwerth",
    "Vexmorrow",
    "Quandrel",
    "Ostrebeck",
    "Plimmoth",
    "Yarrowdyne",
    "Klemvasser",
    "Thrandolph",
)
_GIVEN_NAMES = (
    "Quillonia",
    "Ismerelda",
    "Orvandine",
    "Tesperine",
    "Wulfgarra",
    "Eldrissa",
    "Morvaine",
    "Brannoch",
)
_MIDDLE_NAMES = ("Marve", "Jorric", "Pellam", "Ysbel", "Corvin", "Aldith", "Fennick", "Larkin")


def _age_years(birth: _dt.date, on: str) -> int:
    day = _dt.datetime.strptime(on, "%Y%m%d").date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@cache
def phi_for(patient_index: int) -> PHIValues:
    """PHI of patient ``patient_index`` (0 gives :data:`PHI`).

    Patient-level values (names, IDs, birth date, address, telephone,
    accession, study/request IDs) differ per patient; institution, staff and
    study dates are shared. Indexes 0-7 have fully distinct names; from 8 on
    the names get a numeric suffix.
    """
    if patient_index < 0:
        raise ValueError("patient_index must be >= 0")
    if patient_index == 0:
        return PHI
    i = patient_index
    k = i % len(_FAMILY_NAMES)
    suffix = "" if i < len(_FAMILY_NAMES) else str(i)
    family = _FAMILY_NAMES[k] + suffix
    given = _GIVEN_NAMES[k] + suffix
    birth = _dt.date(1961, 4, 17) - _dt.timedelta(days=401 * i)
    return replace(
        PHI,
        patient_name=f"{family}^{given}^{_MIDDLE_NAMES[k]}",
        other_patient_names=f"{family}^{given[:4]}ie",
        patient_id=f"PID-{7734 + 1000 * i}-QX",
        other_patient_ids=(f"OPID-{5521 + 1000 * i}-QX", f"MRN-{4410 + 1000 * i}-QX"),
        birth_date=birth.strftime("%Y%m%d"),
        patient_age=f"{_age_years(birth, PHI.study_date):03d}Y",
        patient_sex="F" if i % 2 == 0 else "M",
        patient_address=f"{12 + i} Quillon Lane, Springfield",
        patient_telephone=f"555-0199-{321 + i}",
        accession_number=f"ACC{99887766 + 1000003 * i}",
        study_id=f"STUDYID-QX-P{i}",
        requested_procedure_id=f"RPID-QX-{3307 + i}",
        scheduled_procedure_step_id=f"SPSID-QX-{5512 + i}",
        performed_procedure_step_id=f"PPSID-QX-{6613 + i}",
        admission_id=f"ADM-QX-{77120 + i}",
    )


def phi_strings(phi: PHIValues) -> list[bytes]:
    """Shorthand for ``phi.strings()``."""
    return phi.strings()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def uid_for(*parts: object) -> UID:
    """Deterministic UID below :data:`UID_ROOT` derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    number = int.from_bytes(digest[:16], "big") % 10**30
    return UID(f"{UID_ROOT}2.{number}")


def _ds(value: float) -> str:
    """Format a number as a DS string (at most 16 characters)."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.8g}"
    return text


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _is_big_endian(transfer_syntax: str) -> bool:
    return UID(transfer_syntax) == ExplicitVRBigEndian


def _pixel_bytes(values: np.ndarray, big_endian: bool) -> bytes:
    dtype = values.dtype.newbyteorder(">" if big_endian else "<")
    return values.astype(dtype, copy=False).tobytes()


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _new_object(
    sop_class: str, sop_instance: str, transfer_syntax: str = ExplicitVRLittleEndian
) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _set_patient_study(ds: Dataset, phi: PHIValues | None, study_uid: str) -> None:
    """Patient, General Study and Patient Study modules (Type 1/2 attributes).

    Without ``phi`` the Type 2 attributes are present but empty.
    """
    ds.PatientName = phi.patient_name if phi else ""
    ds.PatientID = phi.patient_id if phi else ""
    ds.PatientBirthDate = phi.birth_date if phi else ""
    ds.PatientSex = phi.patient_sex if phi else ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = phi.study_date if phi else ""
    ds.StudyTime = phi.study_time if phi else ""
    ds.ReferringPhysicianName = phi.referring_physician if phi else ""
    ds.StudyID = phi.study_id if phi else ""
    ds.AccessionNumber = phi.accession_number if phi else ""
    ds.StudyDescription = "RT planning thorax"
    if phi:
        ds.PatientAge = phi.patient_age
        ds.PatientSize = phi.patient_size
        ds.PatientWeight = phi.patient_weight


def _set_series(
    ds: Dataset,
    phi: PHIValues | None,
    modality: str,
    series_uid: str,
    series_number: int,
    description: str,
) -> None:
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    if phi:
        ds.SeriesDate = phi.series_date
        ds.SeriesTime = phi.series_time
    ds.OperatorsName = phi.operators_name if phi else ""


def _set_equipment(ds: Dataset, phi: PHIValues | None, model: str) -> None:
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = model
    ds.SoftwareVersions = "1.0.0"
    if phi:
        ds.InstitutionName = phi.institution_name
        ds.InstitutionAddress = phi.institution_address
        ds.InstitutionalDepartmentName = phi.department_name
        ds.StationName = phi.station_name
        ds.DeviceSerialNumber = phi.device_serial_number


def _set_frame_of_reference(ds: Dataset, for_uid: str) -> None:
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""


# --------------------------------------------------------------------------
# PHI planting
# --------------------------------------------------------------------------


def plant_phi(ds: Dataset, phi: PHIValues = PHI) -> Dataset:
    """Put the values of ``phi`` everywhere in ``ds`` (modified in place, returned).

    Sets the patient, study, series, equipment, physician and free-text
    attributes and all dates/times; adds nested sequences (referenced
    patient, request attributes with a nested protocol code sequence, other
    patient IDs, original attributes with a nested modified attributes item);
    adds a private block (creator :data:`PRIVATE_CREATOR`, group
    :data:`PRIVATE_GROUP`) holding the name (LO), the ID (SH) and a private
    SQ whose item holds the name; sets the file meta source AE title.
    Values that only exist in some IODs (RT dates, reviewer, ROI
    interpreter) are overwritten only when present.
    """
    # Patient module
    ds.PatientName = phi.patient_name
    ds.PatientID = phi.patient_id
    ds.IssuerOfPatientID = phi.issuer_of_patient_id
    ds.PatientBirthDate = phi.birth_date
    ds.PatientSex = phi.patient_sex
    ds.OtherPatientNames = phi.other_patient_names
    ds.PatientMotherBirthName = phi.patient_mother_birth_name
    ds.PatientAddress = phi.patient_address
    ds.PatientTelephoneNumbers = phi.patient_telephone
    ds.PatientComments = phi.patient_comments
    other_ids = []
    for other_id in phi.other_patient_ids:
        item = Dataset()
        item.PatientID = other_id
        item.IssuerOfPatientID = phi.issuer_of_patient_id
        item.TypeOfPatientID = "TEXT"
        other_ids.append(item)
    ds.OtherPatientIDsSequence = other_ids
    ref_patient = _ref(DETACHED_PATIENT_MANAGEMENT, uid_for("patient", phi.patient_id))
    ref_patient.PatientName = phi.patient_name
    ref_patient.PatientID = phi.patient_id
    ds.ReferencedPatientSequence = [ref_patient]

    # Patient Study module
    ds.PatientAge = phi.patient_age
    ds.PatientSize = phi.patient_size
    ds.PatientWeight = phi.patient_weight
    ds.AdditionalPatientHistory = phi.additional_patient_history
    ds.AdmissionID = phi.admission_id

    # General Study
    ds.AccessionNumber = phi.accession_number
    ds.StudyID = phi.study_id
    ds.StudyDate = phi.study_date
    ds.StudyTime = phi.study_time
    ds.ReferringPhysicianName = phi.referring_physician
    ds.PhysiciansOfRecord = phi.physician_of_record
    ds.NameOfPhysiciansReadingStudy = phi.reading_physician
    ds.RequestingPhysician = phi.requesting_physician
    ds.StudyComments = phi.study_comments

    # General Series / performed procedure step
    ds.SeriesDate = phi.series_date
    ds.SeriesTime = phi.series_time
    ds.PerformingPhysicianName = phi.performing_physician
    ds.OperatorsName = phi.operators_name
    ds.PerformedProcedureStepID = phi.performed_procedure_step_id
    ds.PerformedProcedureStepStartDate = phi.study_date
    ds.PerformedProcedureStepStartTime = phi.study_time

    request = Dataset()
    request.AccessionNumber = phi.accession_number
    request.RequestedProcedureID = phi.requested_procedure_id
    request.RequestedProcedureDescription = "RT planning CT thorax"
    request.ScheduledProcedureStepID = phi.scheduled_procedure_step_id
    request.ScheduledProcedureStepDescription = "Thorax planning scan"
    request.ScheduledProtocolCodeSequence = [
        _code("QXP-1207", "99QUILLON", "Thorax RT planning CT protocol")
    ]
    ds.RequestAttributesSequence = [request]

    # General Equipment
    ds.InstitutionName = phi.institution_name
    ds.InstitutionAddress = phi.institution_address
    ds.InstitutionalDepartmentName = phi.department_name
    ds.StationName = phi.station_name
    ds.DeviceSerialNumber = phi.device_serial_number

    # General Image / acquisition / instance dates
    ds.AcquisitionDate = phi.acquisition_date
    ds.AcquisitionTime = phi.acquisition_time
    ds.AcquisitionDateTime = phi.acquisition_datetime
    ds.ContentDate = phi.content_date
    ds.ContentTime = phi.content_time
    ds.InstanceCreationDate = phi.content_date
    ds.InstanceCreationTime = phi.content_time
    ds.ImageComments = phi.image_comments

    # IOD-specific values, only where the attribute exists
    for keyword in ("StructureSetDate", "RTPlanDate", "ReviewDate"):
        if keyword in ds:
            setattr(ds, keyword, phi.content_date)
    for keyword in ("StructureSetTime", "RTPlanTime", "ReviewTime"):
        if keyword in ds:
            setattr(ds, keyword, phi.content_time)
    if "ReviewerName" in ds:
        ds.ReviewerName = phi.physician_of_record
    for observation in ds.get("RTROIObservationsSequence", []):
        observation.ROIInterpreter = phi.physician_of_record

    # Two-level nested sequence: Original Attributes > Modified Attributes
    modified = Dataset()
    modified.PatientName = phi.patient_name
    modified.PatientBirthDate = phi.birth_date
    original = Dataset()
    original.AttributeModificationDateTime = f"{phi.study_date}120000"
    original.ModifyingSystem = phi.station_name
    original.SourceOfPreviousValues = phi.institution_name
    original.ReasonForTheAttributeModification = "CORRECT"
    original.ModifiedAttributesSequence = [modified]
    ds.OriginalAttributesSequence = [original]

    # Private block
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", phi.patient_name)
    block.add_new(0x11, "SH", phi.patient_id)
    private_item = Dataset()
    private_item.PatientName = phi.patient_name
    private_item.PatientID = phi.patient_id
    block.add_new(0x12, "SQ", [private_item])

    # File meta
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.SourceApplicationEntityTitle = phi.source_ae_title
    return ds


# --------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _ct_grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float32)
    u = (u + 0.5) / cols * 2.0 - 1.0
    v = (v + 0.5) / rows * 2.0 - 1.0
    iy, ix = np.mgrid[0:rows, 0:cols]
    texture = ((ix * 3 + iy * 5) % 17).astype(np.uint16)
    return u, v, texture


def _ct_pixels(rows: int, cols: int, index: int, count: int) -> np.ndarray:
    """Stored values (12 bit, intercept -1024) of a simple thorax phantom."""
    u, v, texture = _ct_grid(rows, cols)
    pixels = np.full((rows, cols), 24, dtype=np.uint16)  # air, -1000 HU
    body = (u / 0.85) ** 2 + (v / 0.65) ** 2 <= 1.0
    pixels[body] = 1064  # soft tissue, 40 HU
    # lungs grow and shrink along the series
    phase = (index + 0.5) / max(count, 1)
    scale = 0.6 + 0.4 * float(np.sin(np.pi * phase))
    for centre in (-0.38, 0.38):
        lung = ((u - centre) / (0.25 * scale)) ** 2 + ((v + 0.05) / (0.4 * scale)) ** 2 <= 1.0
        pixels[lung] = 224  # -800 HU
    spine = (u / 0.1) ** 2 + ((v - 0.48) / 0.1) ** 2 <= 1.0
    pixels[spine] = 1724  # bone, 700 HU
    pixels[body] += (texture[body] + index) % 17
    return pixels


def _ct_geometry(rows: int, cols: int) -> tuple[float, float, float]:
    """(pixel spacing, x origin, y origin) for a 350 mm field of view."""
    spacing = 350.0 / cols
    return spacing, -spacing * (cols - 1) / 2.0, -spacing * (rows - 1) / 2.0


SLICE_THICKNESS = 2.5
FIRST_SLICE_Z = -100.0


def _default_study_uid(patient_index: int) -> UID:
    return uid_for("study", patient_index)


def _default_ct_series_uid(study_uid: str, series_number: int) -> UID:
    return uid_for("ct-series", study_uid, series_number)


def _ct_sop_uid(series_uid: str, index: int) -> UID:
    return uid_for("ct-sop", series_uid, index)


def make_ct_series(
    n: int,
    *,
    rows: int = 64,
    cols: int = 64,
    patient_index: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    plant: bool = True,
    series_number: int = 1,
) -> list[Dataset]:
    """``n`` CT Image Storage objects forming one axial series.

    UIDs default to values derived from ``patient_index`` (study) and
    ``series_number`` (series), so the same arguments give the same UIDs.
    With ``plant=False`` no identifying value is set (Type 2 attributes
    present but empty) and no PHI location (free text, private block,
    nested sequences) is added.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    phi = phi_for(patient_index) if plant else None
    study_uid = study_uid or _default_study_uid(patient_index)
    series_uid = series_uid or _default_ct_series_uid(study_uid, series_number)
    for_uid = frame_of_reference_uid or uid_for("for", study_uid)
    big_endian = _is_big_endian(transfer_syntax)
    spacing, x0, y0 = _ct_geometry(rows, cols)

    series: list[Dataset] = []
    for i in range(n):
        sop_uid = _ct_sop_uid(series_uid, i)
        ds = _new_object(CT_IMAGE_STORAGE, sop_uid, transfer_syntax)
        _set_patient_study(ds, phi, study_uid)
        _set_series(ds, phi, "CT", series_uid, series_number, "Thorax 2.5mm")
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        _set_frame_of_reference(ds, for_uid)
        _set_equipment(ds, phi, CT_MODEL)
        # General Image
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.AcquisitionNumber = 1
        if phi:
            ds.ContentDate = phi.content_date
            ds.ContentTime = phi.content_time
        ds.BurnedInAnnotation = "NO"
        # Image Plane
        z = FIRST_SLICE_Z + i * SLICE_THICKNESS
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
        ds.SliceThickness = _ds(SLICE_THICKNESS)
        ds.SliceLocation = _ds(z)
        # Image Pixel / CT Image
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds(350.0)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "1000"
        ds.XRayTubeCurrent = 200
        ds.Exposure = 200
        ds.FilterType = "BODY"
        ds.GeneratorPower = 24
        ds.FocalSpots = ["1.2"]
        ds.ConvolutionKernel = "STANDARD"
        ds.PixelData = _pixel_bytes(_ct_pixels(rows, cols, i, n), big_endian)
        if phi:
            plant_phi(ds, phi)
        series.append(ds)
    return series


# --------------------------------------------------------------------------
# RT set
# --------------------------------------------------------------------------


@dataclass
class RTSet:
    """A consistent CT + RTSTRUCT + RTPLAN + RTDOSE set of one patient."""

    ct: list[Dataset]
    rtstruct: Dataset
    rtplan: Dataset
    rtdose: Dataset
    patient_index: int = 0

    def all(self) -> list[Dataset]:
        """CT images first, then structure set, plan and dose."""
        return [*self.ct, self.rtstruct, self.rtplan, self.rtdose]


_ROI_NAMES = ("BODY", "PTV", "CTV", "GTV", "SPINALCORD", "LUNG_L", "LUNG_R", "HEART", "ESOPHAGUS")
_ROI_TYPES = {"BODY": "EXTERNAL", "PTV": "PTV", "CTV": "CTV", "GTV": "GTV"}


def _roi_shape(k: int) -> tuple[float, float, float]:
    """(centre x, centre y, radius) in mm of ROI ``k``."""
    if k == 0:
        return 0.0, 0.0, 140.0
    angle = 2.0 * np.pi * (k - 1) / 8.0
    return 60.0 * float(np.cos(angle)), 40.0 * float(np.sin(angle)), 12.0 + 3.0 * (k % 4)


def _contour_points(cx: float, cy: float, radius: float, z: float, npts: int = 12) -> list[str]:
    data: list[str] = []
    for j in range(npts):
        a = 2.0 * np.pi * j / npts
        data += [
            _ds(round(cx + radius * float(np.cos(a)), 2)),
            _ds(round(cy + radius * float(np.sin(a)), 2)),
            _ds(z),
        ]
    return data


def _make_rtstruct(
    ct: list[Dataset], phi: PHIValues, n_rois: int, study_uid: str, for_uid: str
) -> Dataset:
    series_uid = uid_for("rtstruct-series", study_uid)
    ds = _new_object(RT_STRUCTURE_SET_STORAGE, uid_for("rtstruct-sop", series_uid))
    _set_patient_study(ds, phi, study_uid)
    _set_series(ds, phi, "RTSTRUCT", series_uid, 2, "Structures")
    _set_frame_of_reference(ds, for_uid)
    _set_equipment(ds, phi, TPS_MODEL)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "RS1"
    ds.StructureSetName = "Thorax contours"
    ds.StructureSetDate = phi.content_date
    ds.StructureSetTime = phi.content_time

    ct_series_uid = ct[0].SeriesInstanceUID
    series_item = Dataset()
    series_item.SeriesInstanceUID = ct_series_uid
    series_item.ContourImageSequence = [_ref(CT_IMAGE_STORAGE, s.SOPInstanceUID) for s in ct]
    study_item = _ref("1.2.840.10008.3.1.2.3.1", study_uid)  # Detached Study Management
    study_item.RTReferencedSeriesSequence = [series_item]
    for_item = Dataset()
    for_item.FrameOfReferenceUID = for_uid
    for_item.RTReferencedStudySequence = [study_item]
    ds.ReferencedFrameOfReferenceSequence = [for_item]

    n = len(ct)
    roi_items, contour_items, observation_items = [], [], []
    for k in range(n_rois):
        number = k + 1
        name = _ROI_NAMES[k] if k < len(_ROI_NAMES) else f"ROI_{number}"
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        roi_items.append(roi)

        if k == 0:
            slices = range(n)
        else:
            first = n // 4
            slices = range(first, max(first + 1, (3 * n) // 4))
        cx, cy, radius = _roi_shape(k)
        contours = []
        for contour_number, i in enumerate(slices, start=1):
            contour = Dataset()
            contour.ContourImageSequence = [_ref(CT_IMAGE_STORAGE, ct[i].SOPInstanceUID)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = 12
            contour.ContourNumber = contour_number
            contour.ContourData = _contour_points(cx, cy, radius, float(ct[i].SliceLocation))
            contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = [(40 * k) % 256, (255 - 50 * k) % 256, (90 + 70 * k) % 256]
        roi_contour.ContourSequence = contours
        roi_contour.ReferencedROINumber = number
        contour_items.append(roi_contour)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = _ROI_TYPES.get(name, "ORGAN")
        observation.ROIInterpreter = phi.physician_of_record
        observation_items.append(observation)

    ds.StructureSetROISequence = roi_items
    ds.ROIContourSequence = contour_items
    ds.RTROIObservationsSequence = observation_items
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate = phi.content_date
    ds.ReviewTime = phi.content_time
    ds.ReviewerName = phi.physician_of_record
    return plant_phi(ds, phi)


def _make_rtplan(
    rtstruct: Dataset, phi: PHIValues, n_beams: int, study_uid: str, for_uid: str
) -> Dataset:
    series_uid = uid_for("rtplan-series", study_uid)
    ds = _new_object(RT_PLAN_STORAGE, uid_for("rtplan-sop", series_uid))
    _set_patient_study(ds, phi, study_uid)
    _set_series(ds, phi, "RTPLAN", series_uid, 3, "Plan")
    _set_frame_of_reference(ds, for_uid)
    _set_equipment(ds, phi, TPS_MODEL)
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "PLAN-QX"
    ds.RTPlanName = "Thorax VMAT"
    ds.RTPlanDate = phi.content_date
    ds.RTPlanTime = phi.content_time
    ds.PlanIntent = "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = [_ref(RT_STRUCTURE_SET_STORAGE, rtstruct.SOPInstanceUID)]

    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = "HFS"
    setup.SetupTechnique = "ISOCENTRIC"
    ds.PatientSetupSequence = [setup]

    isocentre = ["0", "0", _ds(FIRST_SLICE_Z + 20.0)]
    meterset = 120.0
    beams, referenced_beams = [], []
    for b in range(n_beams):
        number = b + 1
        gantry = (360.0 * b / n_beams + 180.0) % 360.0
        beam = Dataset()
        beam.Manufacturer = MANUFACTURER
        beam.InstitutionName = phi.institution_name
        beam.InstitutionalDepartmentName = phi.department_name
        beam.ManufacturerModelName = "SynthLinac"
        beam.DeviceSerialNumber = phi.device_serial_number
        beam.TreatmentMachineName = TREATMENT_MACHINE
        beam.PrimaryDosimeterUnit = "MU"
        beam.SourceAxisDistance = "1000"
        beam.BeamNumber = number
        beam.BeamName = f"G{int(gantry):03d}"
        beam.BeamDescription = f"Static field {number}"
        beam.BeamType = "STATIC"
        beam.RadiationType = "PHOTON"
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.NumberOfWedges = 0
        beam.NumberOfCompensators = 0
        beam.NumberOfBoli = 0
        beam.NumberOfBlocks = 0
        beam.FinalCumulativeMetersetWeight = "1"
        beam.ReferencedPatientSetupNumber = 1
        devices = []
        for device_type in ("ASYMX", "ASYMY"):
            device = Dataset()
            device.RTBeamLimitingDeviceType = device_type
            device.NumberOfLeafJawPairs = 1
            devices.append(device)
        beam.BeamLimitingDeviceSequence = devices

        control_points = []
        for index, weight in ((0, "0"), (1, "1")):
            cp = Dataset()
            cp.ControlPointIndex = index
            cp.CumulativeMetersetWeight = weight
            if index == 0:
                cp.NominalBeamEnergy = "6"
                cp.DoseRateSet = "600"
                positions = []
                for device_type, jaws in (("ASYMX", ["-50", "50"]), ("ASYMY", ["-60", "60"])):
                    pos = Dataset()
                    pos.RTBeamLimitingDeviceType = device_type
                    pos.LeafJawPositions = jaws
                    positions.append(pos)
                cp.BeamLimitingDevicePositionSequence = positions
                cp.GantryAngle = _ds(gantry)
                cp.GantryRotationDirection = "NONE"
                cp.BeamLimitingDeviceAngle = "0"
                cp.BeamLimitingDeviceRotationDirection = "NONE"
                cp.PatientSupportAngle = "0"
                cp.PatientSupportRotationDirection = "NONE"
                cp.TableTopEccentricAngle = "0"
                cp.TableTopEccentricRotationDirection = "NONE"
                cp.TableTopVerticalPosition = ""
                cp.TableTopLongitudinalPosition = ""
                cp.TableTopLateralPosition = ""
                cp.IsocenterPosition = isocentre
            control_points.append(cp)
        beam.NumberOfControlPoints = len(control_points)
        beam.ControlPointSequence = control_points
        beams.append(beam)

        referenced = Dataset()
        referenced.ReferencedBeamNumber = number
        referenced.BeamDose = _ds(2.0 / n_beams)
        referenced.BeamMeterset = _ds(meterset / n_beams)
        referenced_beams.append(referenced)

    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = 30
    group.NumberOfBeams = n_beams
    group.NumberOfBrachyApplicationSetups = 0
    group.ReferencedBeamSequence = referenced_beams
    ds.FractionGroupSequence = [group]
    ds.BeamSequence = beams
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate = phi.content_date
    ds.ReviewTime = phi.content_time
    ds.ReviewerName = phi.physician_of_record
    return plant_phi(ds, phi)


DOSE_GRID = (4, 8, 8)  # frames, rows, columns


def _dose_pixels(frames: int, rows: int, cols: int) -> np.ndarray:
    f, r, c = np.mgrid[0:frames, 0:rows, 0:cols].astype(np.float64)
    d2 = ((r - (rows - 1) / 2) / rows) ** 2 + ((c - (cols - 1) / 2) / cols) ** 2
    d2 = d2 + ((f - (frames - 1) / 2) / max(frames, 1)) ** 2
    dose: np.ndarray = np.round(60000.0 * np.exp(-4.0 * d2)).astype(np.uint32)
    return dose


def _make_rtdose(
    ct: list[Dataset],
    rtstruct: Dataset,
    rtplan: Dataset,
    phi: PHIValues,
    study_uid: str,
    for_uid: str,
) -> Dataset:
    series_uid = uid_for("rtdose-series", study_uid)
    ds = _new_object(RT_DOSE_STORAGE, uid_for("rtdose-sop", series_uid))
    _set_patient_study(ds, phi, study_uid)
    _set_series(ds, phi, "RTDOSE", series_uid, 4, "Dose")
    _set_frame_of_reference(ds, for_uid)
    _set_equipment(ds, phi, TPS_MODEL)
    frames, rows, cols = DOSE_GRID
    ct_rows, ct_cols = int(ct[0].Rows), int(ct[0].Columns)
    ct_spacing, x0, y0 = _ct_geometry(ct_rows, ct_cols)
    spacing_x = ct_spacing * ct_cols / cols
    spacing_y = ct_spacing * ct_rows / rows
    step = SLICE_THICKNESS * max(1, len(ct) // frames)
    ds.InstanceNumber = 1
    ds.ContentDate = phi.content_date
    ds.ContentTime = phi.content_time
    ds.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(FIRST_SLICE_Z)]
    ds.SliceThickness = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = Tag(0x3004, 0x000C)
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.GridFrameOffsetVector = [_ds(step * k) for k in range(frames)]
    ds.DoseGridScaling = "0.001"
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ds.ReferencedRTPlanSequence = [_ref(RT_PLAN_STORAGE, rtplan.SOPInstanceUID)]
    ds.ReferencedStructureSetSequence = [_ref(RT_STRUCTURE_SET_STORAGE, rtstruct.SOPInstanceUID)]
    ds.PixelData = _pixel_bytes(_dose_pixels(frames, rows, cols), big_endian=False)
    return plant_phi(ds, phi)


def make_rt_set(
    n_ct: int = 10,
    n_rois: int = 5,
    n_beams: int = 3,
    *,
    rows: int = 64,
    cols: int = 64,
    patient_index: int = 0,
) -> RTSet:
    """A consistent RT set: CT series, RT Structure Set, RT Plan, RT Dose.

    The structure set references every CT image; the plan references the
    structure set, the dose references the plan and the structure set. All
    objects share patient, StudyInstanceUID and FrameOfReferenceUID, and
    carry the planted PHI of ``patient_index``. The study is
    ``uid_for("rt-study", patient_index)``, distinct from the default study
    of :func:`make_ct_series`.
    """
    if n_ct < 1 or n_rois < 1 or n_beams < 1:
        raise ValueError("n_ct, n_rois and n_beams must be >= 1")
    phi = phi_for(patient_index)
    study_uid = uid_for("rt-study", patient_index)
    for_uid = uid_for("rt-for", study_uid)
    ct = make_ct_series(
        n_ct,
        rows=rows,
        cols=cols,
        patient_index=patient_index,
        study_uid=study_uid,
        frame_of_reference_uid=for_uid,
    )
    rtstruct = _make_rtstruct(ct, phi, n_rois, study_uid, for_uid)
    rtplan = _make_rtplan(rtstruct, phi, n_beams, study_uid, for_uid)
    rtdose = _make_rtdose(ct, rtstruct, rtplan, phi, study_uid, for_uid)
    return RTSet(
        ct=ct, rtstruct=rtstruct, rtplan=rtplan, rtdose=rtdose, patient_index=patient_index
    )


# --------------------------------------------------------------------------
# Structured report
# --------------------------------------------------------------------------


def _content_item(relationship: str | None, value_type: str, concept: Dataset) -> Dataset:
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    return item


def make_sr(patient_index: int = 0, referenced: Sequence[Dataset] | None = None) -> Dataset:
    """A Comprehensive SR with a nested content tree and planted PHI.

    The tree (4 levels) holds TEXT items with the patient name and ID, a
    PNAME item with a physician name, a DATE item with the study date, a
    UIDREF with the study UID and an IMAGE reference. The evidence sequence
    references ``referenced`` or, by default, the first three instances of
    ``make_ct_series(n>=3, patient_index=patient_index)`` (same study).
    """
    phi = phi_for(patient_index)
    if referenced:
        study_uid = str(referenced[0].StudyInstanceUID)
        refs = [
            (str(r.SeriesInstanceUID), str(r.SOPClassUID), str(r.SOPInstanceUID))
            for r in referenced
        ]
    else:
        study_uid = _default_study_uid(patient_index)
        ct_series = _default_ct_series_uid(study_uid, 1)
        refs = [(ct_series, CT_IMAGE_STORAGE, _ct_sop_uid(ct_series, i)) for i in range(3)]

    series_uid = uid_for("sr-series", study_uid)
    ds = _new_object(COMPREHENSIVE_SR_STORAGE, uid_for("sr-sop", series_uid))
    _set_patient_study(ds, phi, study_uid)
    _set_series(ds, phi, "SR", series_uid, 90, "Report")
    ds.ReferencedPerformedProcedureStepSequence = []
    _set_equipment(ds, phi, "SynthReporter")
    # SR Document General
    ds.InstanceNumber = 1
    ds.ContentDate = phi.content_date
    ds.ContentTime = phi.content_time
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = phi.reading_physician
    verifier.VerifyingOrganization = phi.institution_name
    verifier.VerificationDateTime = f"{phi.content_date}{phi.content_time}"
    verifier.VerifyingObserverIdentificationCodeSequence = []
    ds.VerifyingObserverSequence = [verifier]
    ds.PerformedProcedureCodeSequence = []

    by_series: dict[str, list[Dataset]] = {}
    for series, sop_class, sop_instance in refs:
        by_series.setdefault(series, []).append(_ref(sop_class, sop_instance))
    series_items = []
    for series, sops in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series
        item.ReferencedSOPSequence = sops
        series_items.append(item)
    evidence = Dataset()
    evidence.StudyInstanceUID = study_uid
    evidence.ReferencedSeriesSequence = series_items
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]

    # Content tree
    observer = _content_item(
        "HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name")
    )
    observer.PersonName = phi.reading_physician
    study_ref = _content_item(
        "HAS OBS CONTEXT", "UIDREF", _code("110180", "DCM", "Study Instance UID")
    )
    study_ref.UID = study_uid

    study_date = _content_item("HAS PROPERTIES", "DATE", _code("111060", "DCM", "Study Date"))
    study_date.Date = phi.study_date
    image = _content_item("INFERRED FROM", "IMAGE", _code("121112", "DCM", "Source of Measurement"))
    image.ReferencedSOPSequence = [_ref(refs[0][1], refs[0][2])]
    finding = _content_item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"))
    finding.TextValue = (
        f"Nodule in right upper lobe of {phi.patient_name} ({phi.patient_id}), stable"
    )
    finding.ContentSequence = [study_date, image]
    findings = _content_item("CONTAINS", "CONTAINER", _code("121070", "DCM", "Findings"))
    findings.ContinuityOfContent = "SEPARATE"
    findings.ContentSequence = [finding]

    impression = _content_item("CONTAINS", "TEXT", _code("121073", "DCM", "Impression"))
    impression.TextValue = f"No progression for patient {phi.patient_name}, ID {phi.patient_id}"
    impressions = _content_item("CONTAINS", "CONTAINER", _code("121072", "DCM", "Impressions"))
    impressions.ContinuityOfContent = "SEPARATE"
    impressions.ContentSequence = [impression]

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [observer, study_ref, findings, impressions]
    return plant_phi(ds, phi)


# --------------------------------------------------------------------------
# UIDs and traversal
# --------------------------------------------------------------------------


def walk(ds: Dataset) -> Iterator[DataElement]:
    """Every data element of ``ds``, depth first, including nested items."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from walk(item)


def original_uids(datasets: Iterable[Dataset]) -> set[str]:
    """Every UI value in the datasets that is not a DICOM registry UID.

    Walks nested sequences and multi-valued elements; the file meta group is
    not included (its instance UID repeats SOPInstanceUID, and the
    implementation class UID is not an object UID).
    """
    found: set[str] = set()
    for ds in datasets:
        for elem in walk(ds):
            if elem.VR != "UI" or elem.value in (None, ""):
                continue
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            for value in values:
                text = str(value).strip("\x00 ")
                if text and not text.startswith(DICOM_REGISTRY_PREFIX):
                    found.add(text)
    return found


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _swap_pixel_data(ds: Dataset) -> bytes | None:
    """Byte-swap native PixelData in place; return the previous value."""
    if "PixelData" not in ds:
        return None
    previous: bytes = ds.PixelData
    bits = int(ds.get("BitsAllocated", 8))
    if bits in (16, 32, 64):
        dtype = np.dtype(f"<u{bits // 8}")
        ds.PixelData = np.frombuffer(previous, dtype=dtype).byteswap().tobytes()
    return previous


def _current_syntax(ds: Dataset) -> UID:
    """Transfer Syntax of ``ds``: file meta, else the encoding it was read with."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax:
        return UID(syntax)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        return ImplicitVRLittleEndian
    if little is False:
        return ExplicitVRBigEndian
    return ExplicitVRLittleEndian


def write(ds: Dataset, path: str | Path | BinaryIO, transfer_syntax: str | None = None) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, ``DICM``, file meta).

    ``transfer_syntax`` defaults to the one in ``ds.file_meta``. Converting
    to another Transfer Syntax is supported between the uncompressed
    :data:`SUPPORTED_TRANSFER_SYNTAXES`; when the byte order changes the
    pixel data are swapped for the file only. ``ds`` keeps its Transfer
    Syntax and pixel data (the file meta media storage UIDs are refreshed).
    """
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    meta = ds.file_meta
    current = _current_syntax(ds)
    target = UID(transfer_syntax) if transfer_syntax else current
    if target != current and not {current, target} <= set(SUPPORTED_TRANSFER_SYNTAXES):
        raise ValueError(f"cannot convert {current.name} to {target.name}")
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    swap = _is_big_endian(current) != _is_big_endian(target)
    previous_pixels = _swap_pixel_data(ds) if swap else None
    meta.TransferSyntaxUID = target
    try:
        dcmwrite(path, ds, enforce_file_format=True)
    finally:
        meta.TransferSyntaxUID = current
        if previous_pixels is not None:
            ds.PixelData = previous_pixels
