"""Plots of a replayed LOBSTER day and of its counterfactuals, for a reader, not a debugger.

The time axis is the data's own clock: LOBSTER times are seconds after midnight in New York,
placed on the day's date (from the file name, TICKER_YYYY-MM-DD_..., or given) and shown as
HH:MM (HH:MM:SS when the data spans under ten minutes) with the zone's abbreviation. Titles
name the instrument, the date and the LOBSTER level; a series with few points is drawn with
markers so a single interval is visible; axes carry thousands separators; depth can use a
log scale.
Invariant: `day_figures` builds figures without writing anything; `plot_day` saves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

NEW_YORK = ZoneInfo("America/New_York")
PRICE_SCALE = 10_000  # LOBSTER prices are dollars x 10,000
FEW_POINTS = 60  # a series with at most this many points gets markers
CLOCK, CLOCK_SHORT = "%H:%M", "%H:%M:%S"  # seconds shown when the data spans under 10 minutes
SECONDS_SHOWN_BELOW = timedelta(minutes=10)
DAY_NAME = re.compile(r"(?:LOBSTER_SampleFile_)?([A-Za-z0-9.^-]+)_(\d{4}-\d{2}-\d{2})_")


@dataclass(frozen=True)
class DayLabel:
    instrument: str
    date: str  # YYYY-MM-DD, or "" when neither the name nor the caller says
    levels: int

    def title(self, what: str) -> str:
        day = self.date or "date unknown"
        return f"{self.instrument} {day}, LOBSTER level {self.levels}: {what}"


def day_label(name: str, levels: int, day: str | None = None) -> DayLabel:
    """Instrument and date from a LOBSTER file name (`day` overrides the date)."""
    match = DAY_NAME.match(Path(name).name)
    instrument = match.group(1) if match else Path(name).stem
    return DayLabel(instrument, day or (match.group(2) if match else ""), levels)


def pyplot():
    """matplotlib's pyplot on the Agg backend; ValueError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError(
            "--plot needs matplotlib, which is not installed: pip install 'cxe[research]' "
            "(in a checkout: pip install -e '.[research]')"
        ) from exc
    return plt


def clock(label: DayLabel, after_midnight_ns: np.ndarray) -> list[datetime]:
    """Times after midnight as New York clock times on the label's date (1970-01-01 when
    the date is unknown: the time of day is still right, the zone's offset may not be)."""
    midnight = datetime.combine(
        date.fromisoformat(label.date) if label.date else date(1970, 1, 1),
        datetime.min.time(),
        NEW_YORK,
    )
    return [midnight + timedelta(microseconds=int(t) // 1000) for t in after_midnight_ns]


def _time_axis(ax, times: list[datetime], seconds: int) -> None:
    """HH:MM clock labels over exactly the intervals shown (a single interval included)."""
    import matplotlib.dates as mdates

    if not times:
        return
    end = times[-1] + timedelta(seconds=seconds)
    ax.set_xlim(times[0], end)
    short = end - times[0] < SECONDS_SHOWN_BELOW
    ax.xaxis.set_major_formatter(mdates.DateFormatter(CLOCK_SHORT if short else CLOCK, tz=NEW_YORK))
    ax.set_xlabel(f"time of day (New York, {times[0].tzname()})")


def _grouped(decimals: int = 0):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.{decimals}f}")


def day_figures(
    result, seconds: int, label: DayLabel, log_depth: bool = False
) -> dict[str, object]:
    """{file name: matplotlib Figure} for mid and spread, top-of-book depth and volume."""
    plt = pyplot()
    table = result.intervals(seconds)
    times = clock(label, table["start_ns"])  # bars span their interval from its start
    middles = clock(label, table["start_ns"] + seconds * 500_000_000)  # points at the middle
    marker = "o" if len(table) <= FEW_POINTS else None
    every = f"{seconds:,}-second intervals"
    figures = {}

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(middles, table["mid"] / PRICE_SCALE, color="tab:blue", marker=marker)
    top.set_ylabel("mid price, last in interval ($)")
    top.yaxis.set_major_formatter(_grouped(2))
    top.set_title(label.title(f"mid and spread ({every})"))
    bottom.plot(middles, table["spread"] / PRICE_SCALE * 100, color="tab:orange", marker=marker)
    bottom.set_ylabel("mean spread (cents)")
    bottom.yaxis.set_major_formatter(_grouped(1))
    _time_axis(bottom, times, seconds)
    figures["mid-spread.png"] = fig

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(middles, table["bid_size"], label="best bid size", color="tab:green", marker=marker)
    ax.plot(middles, table["ask_size"], label="best ask size", color="tab:red", marker=marker)
    ax.set_ylabel("shares at the best price (mean)")
    if log_depth:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(_grouped())
    ax.yaxis.set_major_formatter(_grouped())
    ax.set_title(label.title(f"top-of-book depth ({every})"))
    ax.legend()
    _time_axis(ax, times, seconds)
    figures["depth.png"] = fig

    fig, ax = plt.subplots(figsize=(10, 4))
    visible = table["volume_all"] - table["volume_hidden"]
    width = timedelta(seconds=seconds)
    ax.bar(times, visible, width=width, align="edge", color="tab:gray", label="visible")
    ax.bar(
        times,
        table["volume_hidden"],
        width=width,
        align="edge",
        bottom=visible,
        color="tab:purple",
        label="hidden",
    )
    ax.set_ylabel("shares executed")
    ax.yaxis.set_major_formatter(_grouped())
    ax.set_title(label.title(f"executions, visible and hidden ({every})"))
    ax.legend()
    _time_axis(ax, times, seconds)
    figures["volume.png"] = fig
    return figures


def counterfactual_figure(outcomes: list, label: DayLabel):
    """Matched volume and VWAP per scenario, the actual rules first."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    names = [o.scenario for o in outcomes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh(names, [o.matched_volume for o in outcomes], color="tab:blue")
    left.set_xlabel("shares the engine matched")
    left.xaxis.set_major_formatter(_grouped())
    left.invert_yaxis()
    vwaps = [o.vwap / PRICE_SCALE if o.matched_volume else np.nan for o in outcomes]
    right.barh(names, vwaps, color="tab:orange")  # nothing drawn where nothing traded
    right.set_xlabel("VWAP of the matched shares ($)")
    right.xaxis.set_major_formatter(_grouped(2))
    right.xaxis.set_major_locator(MaxNLocator(4))
    if traded := [v for v in vwaps if not np.isnan(v)]:
        margin = 0.05 * (max(traded) - min(traded)) + 0.01
        right.set_xlim(min(traded) - margin, max(traded) + margin)
    right.invert_yaxis()
    fig.suptitle(label.title("the same flow under other rules"))
    return fig


def save(figures: dict[str, object], out: Path) -> list[Path]:
    plt = pyplot()
    files = []
    for name, fig in figures.items():
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        files.append(out / name)
    plt.close("all")
    return files
