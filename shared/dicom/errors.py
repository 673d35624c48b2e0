"""Why a DICOM object cannot be processed.

Messages name the structural problem (offsets, tags, missing attributes) and never
repeat element values, so they are safe to log and to store beside quarantined objects.
"""

from __future__ import annotations


class RejectedObject(Exception):
    """The object cannot be de-identified; ``reason`` says why, in words an operator can act on."""

    code = "rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotDicom(RejectedObject):
    """The bytes are not a DICOM Part 10 file nor a bare DICOM data set."""

    code = "not-dicom"


class Truncated(RejectedObject):
    """The file ends before an element, item or pixel data fragment it announces."""

    code = "truncated"


class Malformed(RejectedObject):
    """The encoding is inconsistent (bad VR, bad item structure, impossible length)."""

    code = "malformed"


class MissingAttribute(RejectedObject):
    """An attribute every composite object must have (a UID of the SOP Common, study or
    series module) is absent or empty."""

    code = "missing-attribute"


class LimitExceeded(RejectedObject):
    """The object is beyond a configured limit (size, inflated size, nesting depth); it may
    be valid, but accepting it would cost more memory or recursion than allowed."""

    code = "limit-exceeded"


class FilteredOut(RejectedObject):
    """The object was refused by the site's filter (not an error in the object)."""

    code = "filtered"


class IdentifyingPixels(RejectedObject):
    """The object says its pixel data may identify the patient (Burned In Annotation or
    Recognizable Visual Features YES); pixels are not cleaned, so it is held back unless
    an operator accepts such objects."""

    code = "burned-in-annotation"
