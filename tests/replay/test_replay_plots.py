"""Plots on the data's own clock, titled with instrument, date and level, readable with a
single interval (the README's example once drew three empty plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.replay.plots import clock, counterfactual_figure, day_figures, day_label

pytest.importorskip("matplotlib")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_first999_message_10.csv"
BOOK = DATA / "AAPL_2012-06-21_first999_orderbook_10.csv"
needs_lobster = pytest.mark.skipif(not MESSAGES.exists(), reason="LOBSTER samples not present")


@pytest.mark.parametrize(
    ("name", "date", "expected"),
    [
        ("AAPL_2012-06-21_34200000_57600000_message_10.csv", None, ("AAPL", "2012-06-21")),
        ("LOBSTER_SampleFile_GOOG_2012-06-21_5.zip", None, ("GOOG", "2012-06-21")),
        ("AAPL_2012-06-21_first999_message_10.csv", "2012-06-22", ("AAPL", "2012-06-22")),
        ("flow.log.bak", None, ("flow.log", "")),
    ],
)
def test_the_label_comes_from_the_file_name_or_the_given_date(name, date, expected):
    label = day_label(name, 10, date)
    assert (label.instrument, label.date) == expected
    assert label.title("depth").endswith(", LOBSTER level 10: depth")


def test_times_after_midnight_are_new_york_clock_times_on_the_days_date():
    summer = clock(day_label("AAPL_2012-06-21_x", 1), np.array([34_200 * 10**9]))[0]
    assert (summer.strftime("%Y-%m-%d %H:%M"), summer.tzname()) == ("2012-06-21 09:30", "EDT")
    assert summer.utcoffset().total_seconds() == -4 * 3600
    winter = clock(day_label("AAPL_2012-12-21_x", 1), np.array([57_600 * 10**9]))[0]
    assert (winter.strftime("%H:%M"), winter.tzname()) == ("16:00", "EST")


@needs_lobster
def test_a_single_interval_is_drawn_with_markers_titles_and_clock_labels():
    from engine.replay.runner import replay_lobster

    result = replay_lobster(MESSAGES, BOOK)
    label = day_label(result.name, result.day.levels)
    figures = day_figures(result, 60, label, log_depth=True)
    assert sorted(figures) == ["depth.png", "mid-spread.png", "volume.png"]
    top, bottom = figures["mid-spread.png"].axes
    assert (
        top.get_title() == "AAPL 2012-06-21, LOBSTER level 10: mid and spread (60-second intervals)"
    )
    line = top.get_lines()[0]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"
    assert bottom.get_xlabel() == "time of day (New York, EDT)"
    start, end = bottom.get_xlim()
    assert bottom.xaxis.get_major_formatter()(start) == "09:30:00"
    assert bottom.xaxis.get_major_formatter()(end) == "09:31:00"
    depth = figures["depth.png"].axes[0]
    assert depth.get_yscale() == "log"
    assert depth.yaxis.get_major_formatter()(12_345) == "12,345"
    assert figures["volume.png"].axes[0].get_legend_handles_labels()[1] == ["visible", "hidden"]


@needs_lobster
def test_the_counterfactuals_get_a_comparison_plot():
    from engine.replay.counterfactual import compare
    from engine.replay.runner import replay_lobster

    result = replay_lobster(MESSAGES, BOOK)
    outcomes = compare(result.commands, result.tick)
    figure = counterfactual_figure(outcomes, day_label(result.name, result.day.levels))
    volume, vwap = figure.axes
    assert [bar.get_width() for bar in volume.patches] == [o.matched_volume for o in outcomes]
    assert [t.get_text() for t in volume.get_yticklabels()] == [o.scenario for o in outcomes]
    assert vwap.get_xlabel() == "VWAP of the matched shares ($)"
    assert figure.get_suptitle().startswith("AAPL 2012-06-21, LOBSTER level 10")
