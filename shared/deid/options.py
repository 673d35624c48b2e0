"""The options of the built-in profile (PS3.15 E.3), as a value that configuration, the
command line and the engine share; it imports nothing of the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True, slots=True)
class ProfileOptions:
    """The options of PS3.15 E.3 (all off: the Basic Profile alone)."""

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_longitudinal_full_dates: bool = False
    retain_longitudinal_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False

    def __post_init__(self) -> None:
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise ValueError(
                "choose one of Retain Longitudinal Temporal Information with Full Dates or "
                "with Modified Dates, not both"
            )

    @classmethod
    def ricord(cls) -> ProfileOptions:
        """The RICORD protocol: Basic Profile, Retain Longitudinal Temporal Information
        with Modified Dates, Retain Patient Characteristics."""
        return cls(retain_longitudinal_modified_dates=True, retain_patient_characteristics=True)

    def selected(self) -> list[str]:
        return [name for name, on in asdict(self).items() if on]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
