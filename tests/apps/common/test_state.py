"""The one state guard (apps.common.state): a write naming a read-only state field is refused naming it."""

import pytest

from apps.common.errors import ApplicationError
from apps.common.state import refuse_state_fields


def test_given_a_state_field_when_guarded_then_refused_naming_the_field():
    with pytest.raises(ApplicationError) as err:
        refuse_state_fields({"name": "x", "status": "running"}, ("status",), how="through start/stop")
    assert err.value.field == "status" and "'status' is read-only state: through start/stop" in err.value.message


def test_given_the_current_value_or_no_state_field_when_guarded_then_accepted():
    refuse_state_fields({"status": "stopped", "name": "x"}, ("status",), current={"status": "stopped"})
    refuse_state_fields({"name": "x"}, ("status",))
    refuse_state_fields([1, 2], ("status",))  # not an object: the input serializer answers for the shape
