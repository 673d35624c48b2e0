"""What ingest makes of an object the reader cannot take: always a refusal with a reason
(quarantine and Cannot Understand), never an error that makes the sender retry."""

from __future__ import annotations

import inspect
import sys

import pytest

from shared.dicom.errors import RejectedObject
from shared.ingest import Unreadable, validate
from tests.handmade import nested_file


def test_the_reader_running_out_of_stack_is_a_refusal_not_a_crash() -> None:
    data = nested_file(60)  # within the reader's nesting limit
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # as if the stack were nearly used up
    try:
        with pytest.raises(RejectedObject) as refused:
            validate(data)
    finally:
        sys.setrecursionlimit(limit)
    assert isinstance(refused.value, Unreadable)
    assert refused.value.code == "unreadable"
    assert "nests sequences too deeply" in refused.value.reason


def test_nesting_beyond_the_limit_is_refused_with_a_reason() -> None:
    with pytest.raises(RejectedObject) as refused:
        validate(nested_file(3000))
    assert "nest" in refused.value.reason


def test_a_valid_object_gets_its_key() -> None:
    assert validate(nested_file(3)).endswith(".dcm")
