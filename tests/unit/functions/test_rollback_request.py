"""The operator's rollback payload is checked before anything is read or signed."""

from __future__ import annotations

from typing import Any

import pytest

from functions.rollback.logic import RollbackRefused, RollbackRequest


def test_a_model_and_a_positive_version_make_a_request() -> None:
    assert RollbackRequest.from_event({"model": "digits", "to_version": 3}) == RollbackRequest(
        "digits", 3
    )


@pytest.mark.parametrize(
    ("event", "named"),
    [
        (["digits", 3], "payload must be"),
        ({"to_version": 3}, "model must be"),
        ({"model": "", "to_version": 3}, "model must be"),
        ({"model": "digits"}, "to_version must be"),
        ({"model": "digits", "to_version": "3"}, "to_version must be"),
        ({"model": "digits", "to_version": True}, "to_version must be"),
        ({"model": "digits", "to_version": 0}, "to_version must be"),
        ({"action": "rollback", "model": "digits", "to_version": 1}, "unknown fields action"),
    ],
)
def test_a_bad_payload_is_refused_with_what_is_wrong(event: Any, named: str) -> None:
    with pytest.raises(RollbackRefused, match=named):
        RollbackRequest.from_event(event)
