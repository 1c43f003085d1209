"""The fail-over history checker (srp.testing.history) on hand-made runs."""

from __future__ import annotations

import pytest

from srp.testing.history import Answer, Claim, Reign, checkFencing, checkHistory


def run(*answers: tuple[float, int, str]) -> list[Answer]:
    return [Answer(at, number, place) for at, number, place in answers]


def test_a_clean_move_is_ok() -> None:
    sent = {0: 0.0, 1: 1.0, 2: 1.1, 3: 1.2}
    report = checkHistory(sent, run((0.01, 0, "A"), (1.05, 1, "B"), (1.15, 2, "B"),
                                    (1.25, 3, "B")), faultAt=0.5, end=2.0)
    assert report.ok
    assert report.places == ("B",)
    assert (report.lost, report.stale) == ((), ())
    assert report.longestGap == pytest.approx(0.55)


def test_an_answer_from_a_replaced_place_is_stale() -> None:
    sent = {n: n * 0.1 for n in range(5)}
    answers = run((0.05, 0, "A"), (0.6, 1, "A"), (0.7, 2, "B"), (0.8, 3, "A"), (0.9, 4, "B"))
    report = checkHistory(sent, answers, faultAt=0.5, end=2.0)
    assert not report.ok
    assert report.places == ("A", "B")
    assert report.stale == (Answer(0.8, 3, "A"),)


def test_unanswered_requests_are_lost_unless_still_in_flight() -> None:
    sent = {0: 0.0, 1: 0.1, 2: 1.8}
    report = checkHistory(sent, run((0.05, 0, "A")), faultAt=0.5, end=2.0, grace=0.5)
    assert report.lost == (1,)
    assert not report.ok


def test_answered_twice_is_counted_not_failed() -> None:
    sent = {0: 0.0, 1: 0.3}
    report = checkHistory(sent, run((0.6, 0, "B"), (0.7, 0, "B"), (0.8, 1, "B")),
                          faultAt=0.5, end=2.0)
    assert report.ok
    assert report.duplicated == 1


def test_no_answer_after_the_fault_is_a_gap_to_the_end() -> None:
    report = checkHistory({0: 0.0}, run((0.1, 0, "A")), faultAt=0.5, end=3.0)
    assert report.longestGap == pytest.approx(2.5)
    assert report.places == ()


def claims(*answers: tuple[float, float, int, int]) -> list[Claim]:
    return [Claim(sent, received, node, token) for sent, received, node, token in answers]


def test_a_clean_succession_of_actives_is_ok() -> None:
    """An active, a gap with none, its successor with a larger token: one at a time."""
    report = checkFencing(claims((0.0, 0.01, 1, 7), (0.1, 0.11, 2, 0), (0.5, 0.51, 1, 7),
                                 (0.6, 0.61, 1, 0), (1.6, 1.61, 2, 9), (1.7, 1.71, 1, 0)))
    assert report.ok
    assert report.reigns == (Reign(7, 1, 0.01, 0.5), Reign(9, 2, 1.61, 1.6))
    assert report.longestWithout == pytest.approx(1.1)
    assert report.answers == 6


def test_an_older_active_answering_after_the_newer_overlaps() -> None:
    """The older active (token 7) still answers as active after token 9 did: two at once."""
    report = checkFencing(claims((0.0, 0.01, 1, 7), (1.0, 1.01, 2, 9), (1.1, 1.11, 1, 7)))
    assert not report.ok
    [(older, newer)] = report.overlaps
    assert (older.token, newer.token) == (7, 9)


def test_answers_in_flight_together_do_not_overlap() -> None:
    """The older's last answer was asked for before the newer's first arrived: no proof."""
    assert checkFencing(claims((0.0, 0.5, 1, 7), (0.2, 0.3, 2, 9))).ok


def test_one_token_from_two_nodes_is_shared() -> None:
    """A token is one election: two nodes answering with it is a failure."""
    report = checkFencing(claims((0.0, 0.01, 1, 7), (0.1, 0.11, 2, 7)))
    assert report.shared == (7,) and not report.ok
