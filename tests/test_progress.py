"""Progress reporting: the mode chosen, the ETA, and the log lines written off a terminal."""

import logging

import pytest

from pipeline.progress import ProgressReporter, eta_seconds, progress_mode, track_progress


def test_eta_is_the_rate_so_far_times_what_is_left():
    assert eta_seconds(10, 40, 5.0) == pytest.approx(15.0)
    assert eta_seconds(0, 40, 5.0) is None
    assert eta_seconds(10, None, 5.0) is None
    assert eta_seconds(50, 40, 5.0) == 0.0


@pytest.mark.parametrize("value, expected", [("bar", "bar"), ("LOG", "log"), ("off", "off"), ("", "log"), ("nonsense", "log")])
def test_mode_follows_the_environment_then_the_terminal(monkeypatch, value, expected):
    monkeypatch.setenv("DEMOIRE_PROGRESS", value)
    assert progress_mode() == expected  # pytest's stderr is not a terminal


def test_log_mode_writes_done_total_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with ProgressReporter("rendering", 4, unit="pairs", mode="log", log_every_s=0.0) as reporter:
        reporter.advance()
        reporter.advance(3)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("rendering: 1/4 pairs (25%)") and "ETA" in lines[0]
    assert lines[-1].startswith("rendering: 4/4 pairs (100%)")
    assert len(lines) == 2 and reporter.done == 4  # the last count once, not again on exit


def test_log_mode_ends_with_the_last_count_and_an_empty_run_says_so(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with ProgressReporter("rendering", 4, unit="pairs", mode="log", log_every_s=3600.0) as reporter:
        reporter.advance(3)
    with ProgressReporter("scoring", None, unit="pairs", mode="log"):
        pass
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("rendering: 3/4 pairs (75%)")
    assert lines[1].startswith("scoring: 0 pairs, 0:00 elapsed")


def test_eta_ignores_units_done_before_a_resume(monkeypatch):
    clock = iter([100.0, 100.0, 112.0])  # created, entered, asked
    monkeypatch.setattr("pipeline.progress.time.monotonic", lambda: next(clock))
    reporter = ProgressReporter("x", 100, mode="off", start=90)
    with reporter:
        reporter.advance(5)
    assert reporter.done == 95
    # 5 of the 10 this run has to do took 12 s: 12 s left, not 19 × 12 / 95
    assert reporter.eta() == pytest.approx(12.0)


def test_track_progress_yields_every_item_in_order_and_off_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    assert list(track_progress(iter(range(5)), "x", total=5, mode="off")) == [0, 1, 2, 3, 4]
    assert caplog.records == []


def test_bar_mode_draws_on_stderr(capsys):
    assert list(track_progress([1, 2, 3], "restoring", mode="bar")) == [1, 2, 3]
    assert "restoring" in capsys.readouterr().err


def test_the_command_lines_override_wins_until_cleared(monkeypatch):
    from pipeline.progress import set_progress_override

    monkeypatch.setenv("DEMOIRE_PROGRESS", "bar")
    set_progress_override("off")
    try:
        assert progress_mode() == "off"
    finally:
        set_progress_override(None)
    assert progress_mode() == "bar"
    with pytest.raises(ValueError, match="expected one of bar, log, off"):
        set_progress_override("loud")
