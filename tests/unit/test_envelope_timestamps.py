"""A timestamp that leaves the calendar once converted to UTC is a clear validation error
(a 422 at the edge), not an exception that escapes as a 500."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feedbackloop.contract.requests import ChoiceRequest, ExposureRequest


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_out_of_range_in_utc_are_refused(moment: str) -> None:
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        ChoiceRequest.model_validate({"session_id": "s", "occurred_at": moment})
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        ExposureRequest.model_validate({"experiment": "e", "variant": "v", "unit": "user",
                                        "user_id": "u", "occurred_at": moment})


def test_the_edges_of_the_calendar_in_utc_are_accepted() -> None:
    request = ChoiceRequest.model_validate({"session_id": "s",
                                            "occurred_at": "0001-01-01T00:00:00+00:00"})
    assert request.occurred_at is not None and request.occurred_at.year == 1
