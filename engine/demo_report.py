"""What `cxe demo` shows: the live view while it runs (`Progress`), the summary at the end
(`render_live`), each phase's figures from the captured trades (`phase_figures`) and a price
chart (`plots`, when matplotlib is installed).

Money convention: prices and amounts in CNY with two decimals (`format_price`, from integer
fen), quantities in tonnes; nothing here computes a figure the engine or clearing did not
record.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from engine.demo import Figures
from engine.types import format_price

if TYPE_CHECKING:
    from engine.demo_live import LiveDay


def plots(day: LiveDay) -> dict[str, str]:
    """A price chart of the day's trades per instrument, when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"plots": "none (pip install -e '.[research]' adds matplotlib for them)"}
    path = day.out / "plots" / f"prices-{day.date}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    codes = [i.code for i in day.market.instruments]
    columns = min(3, len(codes))
    rows = -(-len(codes) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for n, code in enumerate(codes):
        axis = axes[n // columns][n % columns]
        mine = [t for t in day.trades if t.instrument == code and t.venue != "block"]
        axis.plot([t.seq for t in mine], [t.price / 100 for t in mine], ".", ms=2)
        axis.set_title(code)
        axis.set_xlabel("command sequence number", fontsize=8)
        axis.set_ylabel("CNY per tonne", fontsize=8)
    for n in range(len(codes), rows * columns):
        axes[n // columns][n % columns].set_visible(False)
    figure.suptitle(f"{day.market.name}, {day.date}: trade prices (block trade left out)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"plots": str(path)}


def phase_figures(day: LiveDay) -> list[tuple[str, str, Figures]]:
    """(phase, instrument, figures) from the captured trades, by venue and sequence."""
    opening = max(day.auction_seqs.get("opening", [0]))
    reopening = set(day.auction_seqs.get("re-opening", []))
    rows: dict[tuple[str, str], Figures] = {}
    for t in day.trades:
        if t.venue == "call":
            name = (
                "opening call"
                if t.seq <= opening
                else "re-opening call"
                if t.seq in reopening
                else "closing call"
            )
        else:
            name = {"one_way": "one-way auction", "block": "block trade"}.get(t.venue, t.venue)
        rows.setdefault((name, t.instrument), Figures()).add(t)
    order = ["opening call", "continuous", "pick", "re-opening call", "one-way auction",
             "block trade", "closing call"]  # fmt: skip
    codes = [i.code for i in day.market.instruments]
    return sorted(
        ((p, c, f) for (p, c), f in rows.items()),
        key=lambda r: (order.index(r[0]) if r[0] in order else 99, codes.index(r[1])),
    )


def render_live(day: LiveDay) -> str:
    """The summary printed at the end (and written to OUT/summary.txt)."""
    cny = format_price
    lines = [
        f"{day.market.name}: trading day {day.date} with the real processes on loopback "
        f"(seed {day.seed}, {day.steps:,} continuous steps)",
        "prices in CNY per tonne, quantities in tonnes, money in CNY",
        "",
        *day.log,
        "",
        f"{'phase':<16} {'instrument':<10} {'trades':>7} {'volume t':>11} {'VWAP':>7} "
        f"{'high':>7} {'low':>7}",
    ]
    for name, code, f in phase_figures(day):
        lines.append(
            f"{name:<16} {code:<10} {f.trades:>7,} {f.volume:>11,} {cny(f.vwap):>7} "
            f"{cny(f.high):>7} {cny(f.low):>7}"
        )
    lines += [
        "",
        f"{'the close':<10} {'trades':>7} {'volume t':>11} {'open':>7} {'high':>7} {'low':>7} "
        f"{'close':>7}   (close = VWAP of the day's listed trades)",
    ]
    for r in day.day_records:
        lines.append(
            f"{r.instrument:<10} {r.trades:>7,} {r.volume:>11,} "
            + " ".join(f"{cny(p):>7}" for p in (r.open, r.high, r.low, r.close))
        )
    if day.settlement:
        eff = day.settlement["efficiency"]
        lines += [
            "",
            f"settlement (net, delivery versus payment): netting removes {eff['cash']:.1%} of "
            f"the gross cash legs and {eff['qty']:.1%} of the allowance legs; fees "
            f"{cny(day.settlement['fees'], grouped=True)} CNY",
            f"  {'member':<24} {'bought t':>11} {'sold t':>11} {'net cash CNY':>18}",
        ]
        for member, name, net_cash, bought, sold in day.settlement["members"]:
            lines.append(
                f"  {member:>2} {name:<21} {bought:>11,} {sold:>11,} "
                f"{cny(net_cash, grouped=True):>18}"
            )
    counts = Counter()
    for c in day.gateway_counts.values():
        counts.update(c)
    rejected = ", ".join(
        f"{n:,} {k.removeprefix('rejected ')}" for k, n in sorted(counts.items())
        if k.startswith("rejected ")
    )  # fmt: skip
    lines += [
        "",
        f"gateways ({', '.join(day.gateway_counts)}): {counts['orders']:,} orders, "
        f"{counts['accepted']:,} acknowledged (orders and bids), {counts['cancels']:,} cancels, "
        f"{counts['bids']} auction bids; rejected: {rejected or 'none'}",
        f"engine: ready in {day.engine_ready_s:.1f} s"
        + (" (first run: compiled the kernel)" if day.compiled else " (kernel from the cache)")
        + f"; killed with SIGKILL after seq {day.killed_at_seq:,}, restarted from its journal "
        f"at seq {day.recovered_seq:,} in {day.restart_s:.1f} s; gateways logged on again and "
        f"resent {counts['resent']} "
        f"unanswered order(s) ({_resend_answers(counts)})",
        "",
        "checks:",
    ]
    for name, (ok, text) in day.checks.items():
        lines.append(f"  {'ok    ' if ok else 'FAILED'} {name}: {text}")
    lines += ["", f"state hash {day.final_hash}", ""]
    lines += [f"{name + ':':<13} {path}" for name, path in day.written.items()]
    lines.append(f"{'logs:':<13} {day.out / 'logs'}")
    return "\n".join(lines)


def _resend_answers(counts: Counter) -> str:
    """How the engine answered the resent orders: with their state (an OrderStatus: it had
    them), or as new orders (it had not)."""
    if not counts["resent"]:
        return "none was in flight at the kill"
    answers = [f"{n} {k.split(': ')[1]}" for k, n in counts.items() if k.startswith("resend ")]
    return "answered: " + ", ".join(answers) if answers else "each answered as a new order"


class Progress:
    """What the demo shows while it runs: a live rich view on a terminal (phases with their
    state and notes, each instrument's public trades so far), else a plain line per change
    of a phase (and at most one every few seconds while it runs)."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.live = None
        self.shown: dict[str, tuple[str, str]] = {}
        self.last_line = 0.0
        self.notices = 0  # of day.notices printed

    def __call__(self, day: LiveDay) -> None:
        if self.terminal:
            self._live(day)
        else:
            self._plain(day)

    def _plain(self, day: LiveDay) -> None:
        now = time.monotonic()
        for notice in day.notices[self.notices :]:
            print(f"[{now - day.started:6.1f} s] {notice}", flush=True)
            self.notices += 1
        for phase in day.phases:
            if phase.state == "waiting":
                continue
            seen = self.shown.get(phase.name)
            changed_state = seen is None or seen[0] != phase.state
            if changed_state or (seen[1] != phase.note and now - self.last_line >= 3):
                mark = "done" if phase.state == "done" else "..."
                note = f": {phase.note}" if phase.note else ""
                print(f"[{now - day.started:6.1f} s] {phase.name} {mark}{note}", flush=True)
                self.shown[phase.name] = (phase.state, phase.note)
                self.last_line = now

    def _live(self, day: LiveDay) -> None:
        from rich.live import Live

        if self.live is None:
            self.live = Live(self._render(day), refresh_per_second=4, transient=False)
            self.live.start()
        self.live.update(self._render(day))

    def _render(self, day: LiveDay):
        from rich.console import Group
        from rich.table import Table

        phases = Table(title=f"cxe demo: {day.market.name}, {day.date}", expand=False)
        phases.add_column("phase")
        phases.add_column("", width=7)
        phases.add_column("")
        for phase in day.phases:
            state = {"done": "[green]done", "running": "[yellow]running"}.get(phase.state, "")
            phases.add_row(phase.name, state, phase.note)
        market = Table(title="public trades (market data subscriber)", expand=False)
        for name in ("instrument", "trades", "volume t", "last CNY", "high", "low"):
            market.add_column(name, justify="left" if name == "instrument" else "right")
        trades = day.subscriber.trades if day.subscriber is not None else {}
        for code in [i.code for i in day.market.instruments]:
            f = trades.get(code)
            if f is None:
                market.add_row(code, "0", "0", "-", "-", "-")
                continue
            last = day.subscriber.last.get(code)
            market.add_row(
                code,
                f"{f.trades:,}",
                f"{f.volume:,}",
                format_price(last) if last else "-",
                format_price(f.high),
                format_price(f.low),
            )
        elapsed = f"elapsed {time.monotonic() - day.started:.0f} s; output under {day.out}"
        return Group(phases, market, *day.notices, elapsed)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
