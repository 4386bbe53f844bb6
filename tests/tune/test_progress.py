"""Progress of a long sweep: trial counts and the estimated time to go (formatting as plain functions;
Ray's table with fake trials and a fake clock, no timing)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from entropic_tune.tune.progress import (
    Counts,
    count_trials,
    eta_seconds,
    format_duration,
    progress_line,
    steps_done,
)


def test_trials_not_created_yet_count_as_left():
    # a searcher creates trials one by one: 8 planned, 5 created
    counts = count_trials(["TERMINATED", "TERMINATED", "ERROR", "RUNNING", "PENDING"], planned=8)
    assert counts == Counts(done=2, errored=1, running=1, left=4) and counts.total == 8
    assert count_trials(["PAUSED", "RUNNING"], planned=2) == Counts(0, 0, 2, 0)  # PBT pauses while it runs


def test_finished_trials_count_in_full_and_running_ones_by_their_step():
    assert steps_done(["TERMINATED", "RUNNING", "PENDING"], [3, 4, 0], total_steps=10) == 10 + 4
    assert steps_done(["RUNNING"], [12], total_steps=10) == 10


@pytest.mark.parametrize(("seen", "seconds", "left", "expected"), [
    (10, 50.0, 30, 150.0), (1, 2.0, 0, 0.0), (0, 50.0, 30, None), (5, 0.0, 30, None)])
def test_eta_is_the_steps_left_at_the_rate_seen(seen, seconds, left, expected):
    assert eta_seconds(seen, seconds, left) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (44.2, "45 s"), (60, "1 min"), (61, "2 min"), (3540, "59 min"), (3599, "1 h 00 min"), (3600, "1 h 00 min"),
    (3900, "1 h 05 min"), (86400 + 3 * 3600, "1 d 3 h"), (-5, "0 s")])
def test_durations_read_as_an_estimate(seconds, text):
    assert format_duration(seconds) == text


def test_the_progress_line_says_done_failed_running_left_and_the_time_to_go():
    assert progress_line(Counts(2, 1, 2, 3), 750.0) == \
        "trials: 2 done, 1 failed, 2 running, 3 left (of 8); about 13 min to go"
    assert progress_line(Counts(0, 0, 2, 4), None) == \
        "trials: 0 done, 2 running, 4 left (of 6); time to go: after the first steps"
    assert progress_line(Counts(6, 0, 0, 0), 0.0) == "trials: 6 done, 0 running, 0 left (of 6)"
    assert progress_line(Counts(3, 0, 1, 2), 10.0, finished=True) == "trials: 3 done, 1 running, 2 left (of 6)"


def test_rays_table_shows_the_line_with_the_rate_since_its_first_table(monkeypatch):
    """ProgressTable (a CLIReporter): 2 trials planned of 6 steps; at its first table 2 steps are done
    (e.g. a resumed run); 60 s later 8: 6 steps a minute, 4 left -> 40 s to go."""
    from entropic_tune.tune import callbacks as sweep_callbacks

    clock = iter([1000.0, 1060.0])
    monkeypatch.setattr(sweep_callbacks, "_now", lambda: next(clock))
    table = sweep_callbacks.ProgressTable(planned=2, total_steps=6)

    def trial(status, step):
        return SimpleNamespace(status=status, last_result={"step": step} if step else {})

    assert table.progress([trial("RUNNING", 2), trial("PENDING", 0)]) == \
        "trials: 0 done, 1 running, 1 left (of 2); time to go: after the first steps"
    assert table.progress([trial("TERMINATED", 6), trial("RUNNING", 2)]) == \
        "trials: 1 done, 1 running, 0 left (of 2); about 40 s to go"
    printed = []
    monkeypatch.setattr(table, "_print", printed.append)
    monkeypatch.setattr(table, "_progress_str", lambda trials, done, *info: "\n".join(info))
    monkeypatch.setattr(sweep_callbacks, "_now", lambda: 1120.0)
    table.report([trial("TERMINATED", 6), trial("TERMINATED", 6)], True, "Logical resource usage: 2/2 CPUs")
    assert printed == ["trials: 2 done, 0 running, 0 left (of 2)\nLogical resource usage: 2/2 CPUs"]
