"""L{PauseWatch}: the gaps of a node's tick, noticed at the tick or at a reply, on a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from srp.server.pauses import PauseWatch


def watch(hold: bool = True) -> tuple[Clock, PauseWatch, list[float]]:
    clock = Clock()
    gaps: list[float] = []

    def paused(gap: float) -> bool:
        gaps.append(gap)
        return hold

    pauses = PauseWatch(clock, limit=0.6, quiet=0.25, onPause=paused)
    pauses.start()
    return clock, pauses, gaps


def test_regular_ticks_are_no_pause() -> None:
    clock, pauses, gaps = watch()
    for _ in range(10):
        clock.advance(0.25)
        pauses.ticked()
        assert pauses.mayAnswer()
    assert gaps == []


def test_a_late_tick_is_a_pause_and_holds_answers_for_the_quiet_time() -> None:
    clock, pauses, gaps = watch()
    clock.advance(1.0)
    pauses.ticked()
    assert gaps == [1.0]
    assert not pauses.mayAnswer()
    clock.advance(0.25)
    assert pauses.mayAnswer()


def test_a_reply_asked_for_while_the_tick_is_overdue_notices_the_pause_first() -> None:
    clock, pauses, gaps = watch()
    clock.advance(0.61)  # the tick has not run: the process was stopped
    assert not pauses.mayAnswer()
    assert gaps == [0.61]
    pauses.ticked()  # the overdue tick runs next: the same pause, not another
    assert gaps == [0.61]
    assert not pauses.mayAnswer()


def test_a_role_with_nothing_to_check_answers_on() -> None:
    clock, pauses, gaps = watch(hold=False)
    clock.advance(5.0)
    assert pauses.mayAnswer()
    assert gaps == [5.0]


def test_a_node_that_does_not_tick_has_no_pauses() -> None:
    clock, pauses, gaps = watch()
    pauses.stop()
    clock.advance(5.0)
    assert pauses.mayAnswer()
    assert gaps == []
