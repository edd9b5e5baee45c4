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
