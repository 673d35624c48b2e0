"""What the RT batch does to a set beyond the default profile, and how it names its output.

A set keeps the patient's age through a synthetic birth date (the original age at the
shifted study date), keeps or renames the treatment machine, and goes into
``ANON_<number:03d>`` as ``<modality>_<SOP instance UID>.dcm`` files.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from datetime import date, timedelta

from shared.deid.profile import build_profile
from shared.deid.rules import KEEP, Replace, RuleSet
from shared.storage.keys import safe_component, safe_name

PATIENT_BIRTH_DATE = 0x00100030
TREATMENT_MACHINE_NAME = 0x300A00B2

OUTPUT_FOLDER = "ANON_{:03d}"
# The set folders a batch writes; a run into ROOT does not take them for input sets.
OUTPUT_FOLDER_NAME = re.compile(r"ANON_\d{3,}")
# <modality>_<SOP instance UID>.dcm, each part as made safe by shared.storage.keys.
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*_[A-Za-z0-9][A-Za-z0-9._-]*\.dcm$")

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def output_folder(number: int) -> str:
    """The name of the folder receiving the set numbered ``number``."""
    return OUTPUT_FOLDER.format(number)


def output_name(modality: str, sop_instance_uid: str) -> str:
    """The file name of one output object: ``<modality>_<SOP instance UID>.dcm``, each part
    kept only when safe in a file name (else its digest name, see shared.storage.keys)."""
    return f"{safe_component(modality or 'OT')}_{safe_name(sop_instance_uid, '.dcm')}"


# ---------------------------------------------------------------------------------------
# Synthetic birth date
# ---------------------------------------------------------------------------------------


def _read_date(value: str) -> date | None:
    match = _DATE.match(value.strip())
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _minus(day: date, amount: int, unit: str) -> date | None:
    """``day`` moved back by ``amount`` days, weeks, months or years (a 29 February that
    does not exist becomes the 28th)."""
    try:
        if unit == "D":
            return day - timedelta(days=amount)
        if unit == "W":
            return day - timedelta(weeks=amount)
        months = day.year * 12 + day.month - 1 - amount * (12 if unit == "Y" else 1)
        year, month = divmod(months, 12)
        month += 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    except (ValueError, OverflowError):
        return None


def _full_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def synthetic_birth_date(age: str, birth_date: str, study_date: str, offset_days: int) -> str:
    """A birth date giving the original age at the shifted study date: the age is
    PatientAge when it is readable, else the whole years between the original birth and
    study dates (days under one year). '' when the age or the study date is unknown."""
    study = _read_date(study_date)
    if study is None:
        return ""
    shifted = study - timedelta(days=offset_days)
    match = _AGE.match(age.strip())
    if match is not None:
        found = _minus(shifted, int(match[1]), match[2])
        return found.strftime("%Y%m%d") if found else ""
    birth = _read_date(birth_date)
    if birth is None or birth > study:
        return ""
    years = _full_years(birth, study)
    found = _minus(shifted, years, "Y") if years else shifted - (study - birth)
    return found.strftime("%Y%m%d") if found else ""


# ---------------------------------------------------------------------------------------
# The rule set
# ---------------------------------------------------------------------------------------


def batch_rules(birth_date: str, machine_name: str | None) -> RuleSet:
    """The default (RICORD) profile with the synthetic birth date and the treatment
    machine name kept (the profile would empty it; a planning system needs it to match a
    commissioned machine) or renamed; named and hashed as a rule set of its own."""
    rules = build_profile()
    rules.by_tag[PATIENT_BIRTH_DATE] = Replace(
        "P", "synthetic birth date keeping the age at the shifted study date",
        lambda ctx, element: birth_date,
    )
    extras = ["synthetic birth date"]
    rules.by_tag[TREATMENT_MACHINE_NAME] = KEEP
    if machine_name is not None:
        rules.by_tag[TREATMENT_MACHINE_NAME] = Replace(
            "P", f"renamed to {machine_name}", lambda ctx, element: machine_name
        )
        extras.append("treatment machine renamed")
    else:
        extras.append("treatment machine kept")
    rules.name = "rt-batch: " + rules.name.removeprefix("built-in: ") + "; " + "; ".join(extras)
    identity_text = f"{rules.sha256}\nrt-batch\nbirth-date:synthetic\nmachine:{machine_name}"
    rules.sha256 = hashlib.sha256(identity_text.encode("utf-8")).hexdigest()
    return rules
