"""Market configuration: instruments and members, from TOML or the embedded default market.

Invariants, checked when the config is built (so a bad file is refused at load, not when the
calendar first fires or an account overflows):
- instrument codes and member ids are unique;
- every amount is an integer in the units of `engine.types`, and the members' cash together
  stays within MAX_CASH, so no account can overflow the compiled path's int64 arithmetic;
- the time zone is a known IANA name, and every session bound, block-trading bound and
  schedule time a valid local HH:MM;
- the trading week is a non-empty set of ISO weekdays and every holiday a calendar date
  inside calendar_range, so every date has an answer to "is it a trading day?": a date
  outside the range is not one (its holidays are not known), and asking for a next trading
  day past the range is a ValueError, never a guess;
- gateway ids are unique and every member a gateway lists is a member of the market (the
  engine service lets a gateway act only for the members it lists);
- a key the config does not know is refused with its path (a typo must not leave a field
  at its default), and no price band is wider than 100%;
- with a security section, every key it names is read at load (a missing file, a malformed
  or shared key is refused then) and only configured gateways may have a key.

The embedded market needs no file: CEA vintages 2021-2025 and CCER with docs/MARKET.md's
parameters and illustrative previous closes, and a handful of members.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from engine.calendar_cn import CALENDAR_RANGE, holiday_dates
from engine.instruments import MAX_VALUE, Instrument, ccer, cea
from engine.types import MAX_QTY, is_trading_date

MAX_CASH = MAX_VALUE  # fen, all members together: cash only moves between them


ISO_DAYS = frozenset(range(1, 8))
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Member(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0, lt=2**31)]
    name: str
    kind: str = "broker"  # broker, market_maker, compliance_entity, ...
    cash: Annotated[int, msgspec.Meta(ge=0, le=MAX_CASH)] = 0  # opening cash, fen
    holdings: dict[str, Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY)]] = {}  # code -> tonnes


class Gateway(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A broker gateway allowed to connect to the engine service, and the members it may act
    for (a member listed by several gateways gets its events on each: drop copy)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"\A[\w.-]+\Z")]
    members: list[int]
    cancel_on_disconnect: bool = False  # the default when the gateway's logon does not say


_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"\A[\w.-]+\Z")]


class Security(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """CURVE keys (engine.gateway.security; docs/SECURITY.md): the engine's key pair file
    and, per identity, a public key file (ending .key) or a Z85 public key. Relative paths are
    taken from the config file's directory."""

    server_key: str  # the engine's NAME.key_secret
    gateways: dict[_Name, str] = {}  # gateway id -> its key
    operators: dict[_Name, str] = {}  # operator name -> key (the admin endpoint)
    market_data: dict[_Name, str] = {}  # market data reader -> key

    def resolved(self, base: Path) -> Security:
        """Key file paths made absolute from `base`."""

        def at(text: str) -> str:
            if not text.endswith((".key", ".key_secret")):
                return text  # a Z85 key
            return str(base / Path(text).expanduser())

        def each(keys: dict[str, str]) -> dict[str, str]:
            return {name: at(text) for name, text in keys.items()}

        return Security(
            server_key=at(self.server_key),
            gateways=each(self.gateways),
            operators=each(self.operators),
            market_data=each(self.market_data),
        )


class MarketConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    timezone: str = "Asia/Shanghai"
    sessions: list[tuple[str, str]] = msgspec.field(
        default_factory=lambda: [("09:30", "11:30"), ("13:00", "15:00")]
    )
    instruments: list[Instrument]
    members: list[Member] = []
    gateways: list[Gateway] = []
    # (local HH:MM, action) run from the sequencer's clock; empty: the operator drives phases.
    # Actions: open_call, uncross, halt, close_call, close.
    schedule: list[tuple[str, str]] = []
    # Local hours in which block trades may be reported (docs/MARKET.md: 13:00-15:00); applied
    # when a schedule runs the day from the clock.
    block_hours: tuple[str, str] = ("13:00", "15:00")
    # The id of the first trade this exchange prints. Trade ids run on across days and engine
    # restarts, so clearing's store stays contiguous: its opening-after file sets this to the
    # id after the last trade it captured.
    first_trade_id: Annotated[int, msgspec.Meta(ge=1, lt=2**62)] = 1
    # The trading day these balances follow (clearing's opening-after file sets it): the
    # exchange's first StartOfDay must come after it, so a settled day is never traded again.
    last_trading_day: str = ""
    # Trading days (docs/MARKET.md: Monday to Friday, not on holidays): ISO weekdays (Monday
    # 1 ... Sunday 7) and the dates the market is shut (China's statutory holidays from
    # engine.calendar_cn unless the file gives its own list). StartOfDay is refused on any
    # other day. A weekend made a working day (调休) stays closed, as at the exchanges.
    trading_weekdays: list[int] = msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5])
    holidays: list[str] = msgspec.field(default_factory=holiday_dates)
    # The first and last day the holiday list speaks for: a day outside is refused (a list
    # that stops at 2026 must not open the market on 1 January 2027). A file that lists a
    # later year's holidays moves the end on.
    calendar_range: tuple[str, str] = CALENDAR_RANGE
    # CURVE keys for every socket; None: plain loopback mode, no authentication
    security: Security | None = None

    def __post_init__(self) -> None:
        codes = [i.code for i in self.instruments]
        if len(set(codes)) != len(codes):
            raise ValueError(f"duplicate instrument codes in {codes}")
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate member ids in {ids}")
        gateway_ids = [g.id for g in self.gateways]
        if len(set(gateway_ids)) != len(gateway_ids):
            raise ValueError(f"duplicate gateway ids in {gateway_ids}")
        for gateway in self.gateways:
            unknown = sorted(set(gateway.members) - set(ids))
            if unknown:
                raise ValueError(f"gateway {gateway.id!r} lists unknown members {unknown}")
        if self.security is not None:
            unknown = sorted(set(self.security.gateways) - set(gateway_ids))
            if unknown:
                raise ValueError(
                    f"security.gateways: keys for unknown gateways {unknown}; the market's "
                    f"gateways are {gateway_ids}"
                )
        if sum(m.cash for m in self.members) > MAX_CASH:  # any one account holds at most this
            raise ValueError(f"the members' cash adds up to more than {MAX_CASH:,} fen")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {self.timezone!r}: give an IANA name such as 'Asia/Shanghai'"
            ) from None
        for when, action in self.schedule:
            if action not in SCHEDULE_ACTIONS or not _HH_MM.fullmatch(when):
                raise ValueError(
                    f"schedule entry ({when!r}, {action!r}): expected ('HH:MM', "
                    f"one of {sorted(SCHEDULE_ACTIONS)})"
                )
        if self.last_trading_day and not is_trading_date(self.last_trading_day):
            raise ValueError(
                f"last_trading_day {self.last_trading_day!r}: expected a date YYYY-MM-DD"
            )
        weekdays = self.trading_weekdays
        if not weekdays or len(set(weekdays)) != len(weekdays) or not set(weekdays) <= ISO_DAYS:
            raise ValueError(
                f"trading_weekdays {weekdays}: expected distinct ISO weekdays, Monday 1 to Sunday 7"
            )
        first, last = self.calendar_range
        if not (is_trading_date(first) and is_trading_date(last) and first <= last):
            raise ValueError(
                f"calendar_range ({first!r}, {last!r}): expected two dates YYYY-MM-DD, the "
                "first and last day its holidays cover"
            )
        for day in self.holidays:
            if not is_trading_date(day):
                raise ValueError(f"holidays: {day!r} is not a date YYYY-MM-DD")
            if not first <= day <= last:
                raise ValueError(
                    f"holidays: {day} is outside calendar_range ({first} to {last}): list "
                    "the whole year's holidays and set calendar_range to cover them"
                )
        hours = [("session", bounds) for bounds in self.sessions]
        for name, (start, end) in [*hours, ("block_hours", self.block_hours)]:
            if not (_HH_MM.fullmatch(start) and _HH_MM.fullmatch(end) and start < end):
                raise ValueError(
                    f"{name} ({start!r}, {end!r}): expected ('HH:MM', 'HH:MM'), start first"
                )

    def closed_because(self, day: str) -> str | None:
        """Why `day` (YYYY-MM-DD) is not a trading day ("a Saturday", "a holiday", beyond the
        calendar), or None."""
        first, last = self.calendar_range
        if not first <= day <= last:
            return (
                f"outside the market's calendar ({first} to {last}), whose holidays are not "
                "known: give the market file that year's holidays and a calendar_range "
                "covering it"
            )
        if day in self.holidays:
            return "a holiday"
        weekday = date.fromisoformat(day).isoweekday()
        return None if weekday in self.trading_weekdays else f"a {WEEKDAY_NAMES[weekday - 1]}"

    def next_trading_day(self, after: str) -> str:
        """The first trading day after `after` (YYYY-MM-DD); ValueError if the calendar ends
        first."""
        first, last = self.calendar_range
        day = max(date.fromisoformat(after) + timedelta(days=1), date.fromisoformat(first))
        while day.isoformat() <= last:
            if self.closed_because(day.isoformat()) is None:
                return day.isoformat()
            day += timedelta(days=1)
        raise ValueError(
            f"no trading day after {after} in the market's calendar, which ends "
            f"{self.calendar_range[1]}: give the market file the next year's holidays and a "
            "calendar_range covering it"
        )

    def members_without_gateway(self) -> list[int]:
        """The ids of members no [[gateways]] entry lists: no broker gateway may act for them."""
        listed = {member for gateway in self.gateways for member in gateway.members}
        return sorted(m.id for m in self.members if m.id not in listed)

    def gateway(self, gateway_id: str) -> Gateway | None:
        for gateway in self.gateways:
            if gateway.id == gateway_id:
                return gateway
        return None

    def instrument(self, code: str) -> Instrument:
        for instrument in self.instruments:
            if instrument.code == code:
                return instrument
        raise KeyError(f"no instrument {code!r}; listed: {[i.code for i in self.instruments]}")


# docs/MARKET.md's hours (09:30-11:30, 13:00-15:00 Asia/Shanghai): an opening call from 09:15
# uncrossed at 09:30, the lunch break as a halt with a re-opening call uncrossed at 13:00,
# and a closing call from 14:57.
MARKET_HOURS = [
    ("09:15", "open_call"),
    ("09:30", "uncross"),
    ("11:30", "halt"),
    ("12:55", "open_call"),
    ("13:00", "uncross"),
    ("14:57", "close_call"),
    ("15:00", "close"),
]
SCHEDULE_ACTIONS = frozenset(action for _, action in MARKET_HOURS)
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def default_market() -> MarketConfig:
    """The embedded market (illustrative previous closes, fen per tonne)."""
    closes = {2021: 6150, 2022: 6180, 2023: 6210, 2024: 6240, 2025: 6200}
    instruments = [cea(year, close) for year, close in closes.items()]
    instruments.append(ccer(8200))
    members = [
        Member(
            id=i,
            name=name,
            kind=kind,
            cash=500_000_000_00,
            holdings=dict.fromkeys([x.code for x in instruments], 2_000_000),
        )
        for i, (name, kind) in enumerate(
            [
                ("Huaneng MM", "market_maker"),
                ("Datang MM", "market_maker"),
                ("Shenergy Broker", "broker"),
                ("Guotai Broker", "broker"),
                ("Baowu Steel", "compliance_entity"),
                ("Conch Cement", "compliance_entity"),
            ],
            start=1,
        )
    ]
    gateways = [  # the market makers', the brokers' and the compliance entities' gateways
        Gateway(id="mm", members=[1, 2]),
        Gateway(id="brokers", members=[3, 4]),
        Gateway(id="entities", members=[5, 6]),
    ]
    return MarketConfig(
        name="Embedded CEA/CCER market",
        instruments=instruments,
        members=members,
        gateways=gateways,
    )


def load_market(path: str | Path) -> MarketConfig:
    """Read a market from TOML (or JSON, as clearing exports it); raises ValueError naming the
    file and the bad field, or why the file cannot be read."""
    decode = msgspec.json.decode if str(path).endswith(".json") else msgspec.toml.decode
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        market = decode(text, type=MarketConfig)
        if market.security is not None:  # its keys are read by the service (engine.gateway)
            security = market.security.resolved(Path(path).resolve().parent)
            market = msgspec.structs.replace(market, security=security)
        return market
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
