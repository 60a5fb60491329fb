"""China's statutory public holidays and adjusted workdays (调休), the trading calendar's source.

The dates are the State Council General Office's annual notices on public holiday arrangements
(国务院办公厅关于…部分节假日安排的通知; for 2026 the notice of 4 November 2025), as packaged
by the maintained `chinese-calendar` project (PyPI chinese-calendar 1.11.0, which covers 2004 to
2026). They are vendored here, not imported, so that which days trade is part of this code's
version: the same journal replays the same way on any machine, whatever is installed there.
tests/core/test_calendar.py checks every day of the range against the package when it is
installed (the test extra installs it); when a new year's notice is out, update the package,
add its spans here, move CALENDAR_RANGE on, and that test says whether the two agree.

Invariants: spans are (first, last, name) with first <= last, in date order, not overlapping,
all inside CALENDAR_RANGE; adjusted workdays are weekend days inside the range. The exchanges
stay closed on an adjusted workday (a Saturday or Sunday made a working day), so the trading
rule (engine.config) needs only the weekdays and the holidays; the workdays are kept for the
check against the source and for people.
"""

from __future__ import annotations

from datetime import date, timedelta

# The first and last day the table speaks for: the national carbon market opened in July 2021.
CALENDAR_RANGE = ("2021-01-01", "2026-12-31")

# (first day, last day, holiday), weekends inside a holiday included
HOLIDAY_SPANS: tuple[tuple[str, str, str], ...] = (
    ("2021-01-01", "2021-01-03", "New Year's Day"),
    ("2021-02-11", "2021-02-17", "Spring Festival"),
    ("2021-04-03", "2021-04-05", "Tomb-sweeping Day"),
    ("2021-05-01", "2021-05-05", "Labour Day"),
    ("2021-06-12", "2021-06-14", "Dragon Boat Festival"),
    ("2021-09-19", "2021-09-21", "Mid-autumn Festival"),
    ("2021-10-01", "2021-10-07", "National Day"),
    ("2022-01-01", "2022-01-03", "New Year's Day"),
    ("2022-01-31", "2022-02-06", "Spring Festival"),
    ("2022-04-03", "2022-04-05", "Tomb-sweeping Day"),
    ("2022-04-30", "2022-05-04", "Labour Day"),
    ("2022-06-03", "2022-06-05", "Dragon Boat Festival"),
    ("2022-09-10", "2022-09-12", "Mid-autumn Festival"),
    ("2022-10-01", "2022-10-07", "National Day"),
    ("2022-12-31", "2023-01-02", "New Year's Day"),
    ("2023-01-21", "2023-01-27", "Spring Festival"),
    ("2023-04-05", "2023-04-05", "Tomb-sweeping Day"),
    ("2023-04-29", "2023-05-03", "Labour Day"),
    ("2023-06-22", "2023-06-24", "Dragon Boat Festival"),
    ("2023-09-29", "2023-09-29", "Mid-autumn Festival"),
    ("2023-09-30", "2023-10-06", "National Day"),
    ("2023-12-30", "2024-01-01", "New Year's Day"),
    ("2024-02-10", "2024-02-17", "Spring Festival"),
    ("2024-04-04", "2024-04-06", "Tomb-sweeping Day"),
    ("2024-05-01", "2024-05-05", "Labour Day"),
    ("2024-06-10", "2024-06-10", "Dragon Boat Festival"),
    ("2024-09-15", "2024-09-17", "Mid-autumn Festival"),
    ("2024-10-01", "2024-10-07", "National Day"),
    ("2025-01-01", "2025-01-01", "New Year's Day"),
    ("2025-01-28", "2025-02-04", "Spring Festival"),
    ("2025-04-04", "2025-04-06", "Tomb-sweeping Day"),
    ("2025-05-01", "2025-05-05", "Labour Day"),
    ("2025-05-31", "2025-06-02", "Dragon Boat Festival"),
    ("2025-10-01", "2025-10-05", "National Day"),
    ("2025-10-06", "2025-10-06", "Mid-autumn Festival"),
    ("2025-10-07", "2025-10-08", "National Day"),
    ("2026-01-01", "2026-01-03", "New Year's Day"),
    ("2026-02-15", "2026-02-23", "Spring Festival"),
    ("2026-04-04", "2026-04-06", "Tomb-sweeping Day"),
    ("2026-05-01", "2026-05-05", "Labour Day"),
    ("2026-06-19", "2026-06-21", "Dragon Boat Festival"),
    ("2026-09-25", "2026-09-27", "Mid-autumn Festival"),
    ("2026-10-01", "2026-10-07", "National Day"),
)

# weekend days made working days to bridge a holiday (the exchanges stay closed on them)
ADJUSTED_WORKDAYS: tuple[str, ...] = (
    "2021-02-07",
    "2021-02-20",
    "2021-04-25",
    "2021-05-08",
    "2021-09-18",
    "2021-09-26",
    "2021-10-09",
    "2022-01-29",
    "2022-01-30",
    "2022-04-02",
    "2022-04-24",
    "2022-05-07",
    "2022-10-08",
    "2022-10-09",
    "2023-01-28",
    "2023-01-29",
    "2023-04-23",
    "2023-05-06",
    "2023-06-25",
    "2023-10-07",
    "2023-10-08",
    "2024-02-04",
    "2024-02-18",
    "2024-04-07",
    "2024-04-28",
    "2024-05-11",
    "2024-09-14",
    "2024-09-29",
    "2024-10-12",
    "2025-01-26",
    "2025-02-08",
    "2025-04-27",
    "2025-09-28",
    "2025-10-11",
    "2026-01-04",
    "2026-02-14",
    "2026-02-28",
    "2026-05-09",
    "2026-09-20",
    "2026-10-10",
)


def holiday_dates(spans: tuple[tuple[str, str, str], ...] = HOLIDAY_SPANS) -> list[str]:
    """Every day of every span, YYYY-MM-DD, in order."""
    days = []
    for first, last, _ in spans:
        day, end = date.fromisoformat(first), date.fromisoformat(last)
        while day <= end:
            days.append(day.isoformat())
            day += timedelta(days=1)
    return days
