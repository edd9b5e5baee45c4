"""The session is the one source of truth: validated edits, signals, JSON round trips."""

import json

import numpy as np
import pytest

from backends.imageio import normalize_array
from backends.params import ParamError
from explorer.session import Session, SessionState


@pytest.fixture
def session(qtbot):
    s = Session("dilated")
    s.set_image(normalize_array(np.zeros((20, 30, 3), np.uint8)), "test")
    return s


def test_a_bad_value_is_refused_and_the_last_good_value_kept(session):
    session.set_param("dilation", 5)
    with pytest.raises(ParamError):
        session.set_param("dilation", 40)
    assert session.params()["dilation"] == 5


def test_an_unchanged_value_emits_nothing(session, qtbot):
    session.set_param("dilation", 5)
    with qtbot.assertNotEmitted(session.paramsChanged):
        session.set_param("dilation", 5)


def test_query_outside_the_image_is_ignored_and_defaults_to_the_centre(session):
    assert session.effective_query() == (15, 10)
    session.set_query(50, 5)
    assert session.query is None
    session.set_query(3.7, 4.2)
    assert session.query == (3, 4)


def test_state_round_trips_through_json(session):
    session.set_param("kernel", "gabor")
    session.set_query(3, 4)
    text = json.dumps(session.state.to_dict())
    back = SessionState.from_dict(json.loads(text))
    assert back == session.state
