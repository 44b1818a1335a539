"""The log limiter (``_ratelimit.LogLimiter``) at its edges: windows, the cap, the summary.

The promise pinned first: once a window has ended, a new window's first failure of a key
is logged in full again, whether or not the previous window was summarised.
"""

from __future__ import annotations

from trio_chirp._ratelimit import NODE_CAP, WINDOW, LogLimiter

P, Q, R = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def test_defaults() -> None:
    limiter = LogLimiter()
    assert (limiter.window, limiter.cap, limiter.window_end) == (WINDOW, NODE_CAP, None)
    assert (WINDOW, NODE_CAP) == (10.0, 20)
    assert not limiter.pending
    assert limiter.summarise() == []


def test_a_new_windows_first_failure_is_logged_in_full_when_nothing_was_left_to_summarise() -> None:
    limiter = LogLimiter(window=10.0, cap=5)
    assert limiter.record(0.0, P, "E", "failures") == (True, False)
    assert limiter.window_end == 10.0
    assert not limiter.pending
    # Up to the window's end the key is known; at exactly its end a new window opens.
    assert limiter.record(9.5, Q, "E", "failures") == (True, False)
    assert limiter.record(10.0, P, "E", "failures") == (True, False)
    assert limiter.window_end == 20.0
    assert limiter.record(10.0, Q, "E", "failures") == (True, False)  # the new window forgot Q too
    assert not limiter.pending


def test_a_repeat_inside_the_window_is_counted_and_asks_for_the_summary() -> None:
    limiter = LogLimiter(window=10.0, cap=5)
    assert limiter.record(0.0, P, "E", "failures") == (True, False)
    assert limiter.record(9.999, P, "E", "failures") == (False, True)
    assert limiter.pending
    # Past the window's end, but its summary has not run: still counted in it.
    assert limiter.record(12.0, P, "E", "failures") == (False, True)
    assert limiter.window_end == 10.0
    assert limiter.summarise() == ["2 more failures with 10.0.0.1 in the last 10 s"]
    assert limiter.window_end is None
    assert not limiter.pending
    # The summary closed the window: the next failure is logged in full again.
    assert limiter.record(13.0, P, "E", "failures") == (True, False)
    assert limiter.window_end == 23.0


def test_kinds_and_peers_are_separate_keys_and_the_last_what_names_the_repeats() -> None:
    limiter = LogLimiter(window=5.0, cap=5)
    assert limiter.record(0.0, P, "E", "a") == (True, False)
    assert limiter.record(0.0, P, "F", "b") == (True, False)
    assert limiter.record(0.0, Q, "E", "a") == (True, False)
    assert limiter.record(1.0, P, "E", "first name") == (False, True)
    assert limiter.record(1.0, P, "E", "last name") == (False, True)
    assert limiter.summarise() == ["2 more last name with 10.0.0.1 in the last 5 s"]


def test_the_cap_counts_keys_and_the_summary_counts_other_peers_once() -> None:
    limiter = LogLimiter(window=10.0, cap=2)
    assert limiter.record(0.0, P, "E", "refusals") == (True, False)
    assert limiter.record(0.0, Q, "E", "refusals") == (True, False)  # the cap's last key
    assert limiter.record(0.0, R, "E", "refusals") == (False, True)  # past it
    assert limiter.record(0.0, R, "E", "refusals") == (False, True)
    assert limiter.record(0.0, R, "F", "timeouts") == (False, True)
    assert limiter.record(0.0, P, "E", "refusals") == (False, True)  # a logged key repeats as before
    assert limiter.summarise() == [
        "1 more refusals with 10.0.0.1 in the last 10 s",
        "2 refusals with 1 other peer(s) in the last 10 s (log cap reached)",
        "1 timeouts with 1 other peer(s) in the last 10 s (log cap reached)",
    ]
    # Everything was reset: two keys are logged in full again.
    assert limiter.record(20.0, R, "E", "refusals") == (True, False)
    assert limiter.record(20.0, Q, "F", "timeouts") == (True, False)
    assert limiter.record(20.0, P, "F", "timeouts") == (False, True)


def test_an_overflow_alone_is_pending() -> None:
    limiter = LogLimiter(window=10.0, cap=0)
    assert limiter.record(0.0, P, "E", "x") == (False, True)
    assert limiter.pending
    assert limiter.record(11.0, P, "E", "x") == (False, True)  # pending keeps the window open
    assert limiter.summarise() == ["2 x with 1 other peer(s) in the last 10 s (log cap reached)"]
    assert not limiter.pending


def test_a_window_of_a_fraction_of_a_second_is_named_plainly() -> None:
    limiter = LogLimiter(window=0.5, cap=1)
    limiter.record(0.0, P, "E", "x")
    limiter.record(0.1, P, "E", "x")
    assert limiter.summarise() == ["1 more x with 10.0.0.1 in the last 0.5 s"]


def test_a_new_window_counts_only_its_own_other_peers() -> None:
    limiter = LogLimiter(window=10.0, cap=0)
    limiter.record(0.0, P, "E", "x")
    limiter.record(0.0, Q, "E", "x")
    assert limiter.summarise() == ["2 x with 2 other peer(s) in the last 10 s (log cap reached)"]
    limiter.record(20.0, R, "E", "x")
    assert limiter.summarise() == ["1 x with 1 other peer(s) in the last 10 s (log cap reached)"]
