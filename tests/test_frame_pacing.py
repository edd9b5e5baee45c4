"""When a frame is drawn in turns: after a frame that held the UI thread past STALL_MS, and while
frames keep costing more than KEEP_SPLIT_MS (a frame changing many docks in view is split by the
docks themselves: tests/test_window.py)."""

from explorer.frame_pacing import KEEP_SPLIT_MS, STALL_MS, FramePacer


def _frame(pacer: FramePacer, apply_ms: float, paint_ms: float) -> bool:
    split = pacer.frame_started()
    pacer.applied(apply_ms)
    pacer.painted(paint_ms)
    return split


def test_frames_are_split_after_a_heavy_one_until_they_are_light_again(qtbot):
    pacer = FramePacer()
    assert not _frame(pacer, 2.0, STALL_MS - 2.5)  # the first frame: nothing to judge by yet
    assert not _frame(pacer, 2.0, STALL_MS)  # the last one (7.5 ms) stayed under STALL_MS
    assert _frame(pacer, 2.0, KEEP_SPLIT_MS - 1.0)  # the last one (10 ms) went past it
    assert _frame(pacer, 0.5, 0.5)  # the last one (7 ms) still cost more than KEEP_SPLIT_MS
    assert not _frame(pacer, 0.5, 0.5)  # the last one (1 ms) was light


def test_a_frame_changing_as_many_docks_as_heavy_ones_did_is_split_after_light_ones(qtbot):
    pacer = FramePacer()
    pacer.frame_started(6)
    pacer.panels_changed()  # a frame that made panels: neither it nor the next is learned from
    pacer.applied(STALL_MS + 5)
    assert pacer.frame_started(6)  # (split after the heavy frame itself)
    pacer.applied(STALL_MS + 5)  # the first paint of the new panels: heavy too
    assert pacer.frame_started(3)
    pacer.applied(1.0)
    assert not pacer.frame_started(6)  # nothing learned from either
    pacer.applied(STALL_MS + 5)  # a heavy frame of six docks in view: one alone teaches nothing
    assert pacer.frame_started(3)
    pacer.applied(1.0)
    assert not pacer.frame_started(6)
    pacer.applied(1.0)
    assert not pacer.frame_started(6)  # a light frame of six docks: not split
    pacer.applied(STALL_MS + 5)  # a second heavy one of six docks, soon after the first
    assert pacer.frame_started(3)
    pacer.applied(1.0)
    assert not pacer.frame_started(3)  # light frames of three docks: not split
    pacer.applied(1.0)
    assert pacer.frame_started(6)  # six docks again: split, though the last frame was light
    pacer.new_operator()
    pacer.applied(1.0)
    assert not pacer.frame_started(6)  # another operator: learned afresh


def _light(pacer: FramePacer, count: int, docks: int) -> None:
    for _ in range(count):
        pacer.applied(1.0)
        pacer.frame_started(docks)


def _heavy(pacer: FramePacer, next_docks: int) -> bool:
    pacer.applied(STALL_MS + 5)
    return pacer.frame_started(next_docks)


def test_a_learned_dock_count_is_forgotten_when_no_heavy_frame_comes_for_a_while(qtbot):
    from explorer.frame_pacing import FORGET_AFTER, LEARN_WITHIN

    pacer = FramePacer()
    pacer.frame_started(5)
    _heavy(pacer, 2)  # a heavy frame of five docks...
    _light(pacer, LEARN_WITHIN - 2, 2)
    _heavy(pacer, 2)  # ...and a second one within LEARN_WITHIN frames
    pacer.applied(1.0)
    assert pacer.frame_started(5)  # learned
    _light(pacer, FORGET_AFTER, 5)
    pacer.applied(1.0)
    assert not pacer.frame_started(5)  # every frame since was light: forgotten
    _heavy(pacer, 2)  # heavy frames too far apart teach nothing
    _light(pacer, LEARN_WITHIN, 2)
    _heavy(pacer, 2)
    pacer.applied(1.0)
    assert not pacer.frame_started(5)
