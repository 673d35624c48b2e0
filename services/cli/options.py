"""The profile options every command that de-identifies accepts."""

from __future__ import annotations

import argparse

from shared.deid.options import ProfileOptions

_OPTION_FLAGS = {
    "retain_safe_private": "keep the safe private attributes of Table E.3.10-1",
    "retain_uids": "keep UIDs",
    "retain_device_identity": "keep device identity (serial numbers, station name...)",
    "retain_institution_identity": "keep institution name, address, department",
    "retain_patient_characteristics": "keep age, sex, size, weight... (on by default)",
    "retain_longitudinal_full_dates": "keep dates unchanged",
    "retain_longitudinal_modified_dates": "shift dates by the patient's offset (on by default)",
    "clean_descriptors": "keep descriptions with identifying terms removed",
    "clean_structured_content": "keep SR content with identifying terms removed",
    "clean_graphics": "keep graphics and overlays, text cleaned",
}


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "profile", "PS3.15 Annex E options; the default is RICORD (Basic Profile, "
        "Retain Longitudinal with Modified Dates, Retain Patient Characteristics)"
    )
    group.add_argument(
        "--basic", action="store_true",
        help="start from the Basic Profile alone instead of RICORD, then add options",
    )
    for name, text in _OPTION_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)


def profile_options(args: argparse.Namespace) -> ProfileOptions:
    chosen = {name: bool(getattr(args, name)) for name in _OPTION_FLAGS}
    base = {} if args.basic else {
        "retain_longitudinal_modified_dates": True, "retain_patient_characteristics": True
    }
    merged = {**base, **{k: v for k, v in chosen.items() if v}}
    if merged.get("retain_longitudinal_full_dates"):
        merged["retain_longitudinal_modified_dates"] = False
    return ProfileOptions(**merged)
