"""The guides' examples, run as written against a real engine (issue 18: a complete example
client in docs/GATEWAYS.md that a test runs), and the guides' links and commands kept true."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.cli.test_cli import ROOT
from tests.support.engine import EngineProcess

DOCS = ROOT / "docs"


def python_blocks(name: str) -> list[str]:
    text = (DOCS / name).read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_gateway_guides_client_trades_resends_and_reads_market_data(tmp_path):
    (code,) = python_blocks("GATEWAYS.md")
    assert len([line for line in code.splitlines() if line.strip()]) <= 16  # about a dozen
    with EngineProcess(tmp_path / "data") as engine:
        engine.open_market("CEA25")
        for name, default in (
            ("orders", "tcp://127.0.0.1:5555"),
            ("market_data", "tcp://127.0.0.1:5557"),
            ("snapshots", "tcp://127.0.0.1:5558"),
        ):
            assert default in code
            code = code.replace(default, engine.endpoints[name])
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "member 3 bought 100 t at 62.00 CNY, trade 1"
        assert lines[1].startswith("TradePrint(") and "price=6200, qty=100" in lines[1]
        status = engine.status()
    assert status.gateways["brokers"]["rejects"] == 0  # the resend made no duplicate
    assert status.seq == 1 + 2 + 2  # start of day, call and uncross, two orders: no third


def test_every_guide_link_names_a_file_that_exists():
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        base = page.parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (base / target).exists(), f"{page.name} links {target}, which is missing"
