"""Several LOBSTER days at once: on a local Dask cluster, as the real command runs them, the
combined tables equal the days replayed one after another; bad sources, refused options and
a missing Dask are reported. Days are the first rows of the shipped samples (real data)."""

from __future__ import annotations

import contextlib
import csv
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.replay import parallel
from engine.replay.parallel import (
    SourceRun,
    choose_workers,
    combine,
    expand,
    lobster_day,
    message_bytes,
    run_sources,
)
from tests.cli.test_cli import cxe

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"
FIXTURE = DATA / "AAPL_2012-06-21_first999_message_10.csv"
SAMPLES = ["AMZN_2012-06-21_1", "GOOG_2012-06-21_1", "AAPL_2012-06-21_1"]
ROWS = 1500
LONG = 20_000  # a longer day, so that the shorter days after it finish first

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="LOBSTER samples not present")


def cut(sample: str, rows: int, zipped: Path) -> Path:
    """The first `rows` messages of a shipped sample, with their order book rows, zipped."""
    with (
        zipfile.ZipFile(DATA / f"LOBSTER_SampleFile_{sample}.zip") as shipped,
        zipfile.ZipFile(zipped, "w") as out,
    ):
        for name in shipped.namelist():
            if name.endswith(".csv"):
                lines = shipped.read(name).split(b"\n")[:rows]
                out.writestr(name, b"\n".join(lines) + b"\n")
    return zipped


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> Path:
    """A directory of four days: three zips (the first rows of three samples), the 999-row
    message file with its order book file, and a read-me that is no source."""
    folder = tmp_path_factory.mktemp("days")
    for sample in SAMPLES:
        cut(sample, ROWS, folder / f"{sample}_first{ROWS}.zip")
    for path in (FIXTURE, Path(str(FIXTURE).replace("_message_", "_orderbook_"))):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "README.txt").write_text("four days of NASDAQ order flow\n")
    return folder


def test_a_directory_names_its_days_and_leaves_out_the_rest(days):
    names = [path.name for path in expand([str(days)])]
    assert names == sorted(names) and len(names) == 4
    assert FIXTURE.name in names and not any("orderbook" in n or "README" in n for n in names)
    assert expand([str(days / "*.zip"), str(days / "*.zip")]) == sorted(days.glob("*.zip"))
    with pytest.raises(ValueError, match="no file matches"):
        expand([str(days / "*.parquet")])


def test_days_on_a_local_cluster_equal_the_days_run_one_after_another(days, tmp_path):
    """The runs come back in the order of the sources, not the order they finish in."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("distributed")
    sources = [cut(SAMPLES[0], LONG, tmp_path / "long.zip"), *expand([str(days)])]
    parallel = run_sources(lobster_day, sources, (60, True), workers=2, progress=None)
    # the cluster's processes have ended (multiprocessing's resource tracker, started once
    # per process for spawned children, stays until this process exits)
    left = [p.cmdline() for p in psutil.Process().children(recursive=True)]
    assert [c for c in left if "multiprocessing.resource_tracker" not in " ".join(c)] == []
    serial = [lobster_day(str(source), 60, True) for source in sources]
    assert [run.source for run in parallel] == [str(source) for source in sources]
    for got, want in zip(parallel, serial, strict=True):
        assert (got.summary, got.code, got.error) == (want.summary, 0, "")
        assert "0 of " in got.summary and "identical" in got.summary
        assert (
            got.tables.keys()
            == want.tables.keys()
            == {
                "trades",
                "top",
                "intervals",
                "counterfactuals",
            }
        )
        for kind, table in got.tables.items():
            assert table.dtype == want.tables[kind].dtype
            for name in table.dtype.names:  # a mid with no two-sided row is NaN in both
                nan = table.dtype[name].kind == "f"
                assert np.array_equal(table[name], want.tables[kind][name], equal_nan=nan)
    combined = combine(parallel)
    top = combined["top"]
    assert len(top) == LONG + 3 * ROWS + 999
    sizes = [len(run.tables["top"]) for run in serial]
    expected = [run.source for run, n in zip(serial, sizes, strict=True) for _ in range(n)]
    assert list(top["source"]) == expected
    first = serial[0].tables["top"]
    assert (top[: len(first)]["time_ns"] == first["time_ns"]).all()


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_command_combines_the_days_with_a_source_column(days, tmp_path):
    """With port 8787 taken (here, or by anything else on the machine) the scheduler's HTTP
    server moves elsewhere without Dask's warning reaching the user."""
    pytest.importorskip("distributed")
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken: the case under test anyway
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        parallel = cxe("replay", str(days), "--out", str(tmp_path / "par"), "--workers", "2")
    assert parallel.returncode == 0, parallel.stderr
    assert "already in use" not in parallel.stderr, parallel.stderr
    assert "on a local Dask cluster" in parallel.stdout and "4/4 sources" in parallel.stderr
    serial = cxe("replay", str(days), "--out", str(tmp_path / "ser"), "--workers", "0")
    assert serial.returncode == 0, serial.stderr
    alone = cxe("replay", str(days / FIXTURE.name), "--out", str(tmp_path / "one"))
    assert alone.returncode == 0, alone.stderr
    for kind in ("trades", "top", "intervals"):
        par = (tmp_path / "par" / f"{kind}.csv").read_bytes()
        assert par == (tmp_path / "ser" / f"{kind}.csv").read_bytes()
        rows = read(tmp_path / "par" / f"{kind}.csv")
        assert [r["source"] for r in rows] == sorted(r["source"] for r in rows)
        mine = [r for r in rows if r.pop("source") == str(days / FIXTURE.name)]
        assert mine == read(tmp_path / "one" / f"{kind}.csv")


def test_the_days_run_on_an_existing_cluster_given_its_scheduler(days, tmp_path):
    """A cluster started apart from the command (here on loopback, closed after the test)."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        result = cxe(
            "replay",
            str(days),
            "--out",
            str(tmp_path / "o"),
            "--scheduler",
            cluster.scheduler_address,
        )
        ran_here = dict(cluster.scheduler.task_prefixes["lobster_day"].all_durations)
    assert result.returncode == 0, result.stderr
    assert ran_here["compute"] > 0  # the days were computed by this cluster's workers
    assert f"on the cluster at {cluster.scheduler_address}" in result.stdout
    assert len(read(tmp_path / "o" / "top.csv")) == 3 * ROWS + 999


def test_a_bad_day_is_reported_and_the_others_still_combined(days, tmp_path):
    bad = tmp_path / "X_message_10.csv"
    lines = FIXTURE.read_text().splitlines()
    lines[4] = lines[4].replace(",1,", ",9,", 1)  # a message type LOBSTER does not have
    bad.write_text("\n".join(lines) + "\n")
    (tmp_path / "X_orderbook_10.csv").write_bytes(
        Path(str(FIXTURE).replace("_message_", "_orderbook_")).read_bytes()
    )
    zips = sorted(days.glob("*.zip"))[:2]
    result = cxe("replay", str(bad), *map(str, zips), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert (
        f"cxe replay: {bad}: 1 bad row in the LOBSTER message file (line 5: type" in result.stderr
    )
    assert "2 of 3 sources replayed" in result.stdout
    assert "3 LOBSTER days on this process (0.2 MB of messages in all, under 4 MB" in result.stdout
    rejects = read(tmp_path / "o" / "rejects.csv")
    assert [(r["source"], r["line"], r["reason"]) for r in rejects] == [(str(bad), "5", "bad_type")]
    assert {r["source"] for r in read(tmp_path / "o" / "trades.csv")} == set(map(str, zips))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--plot"], "--plot not with several sources (--plot: plots draw one day"),
        (["--orderbook", "x.csv"], "--orderbook not with several sources"),
        (["--tick", "5"], "--tick: not for LOBSTER days"),
    ],
)
def test_options_for_one_day_are_refused_with_several(days, tmp_path, options, message):
    result = cxe("replay", str(days), *options, "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_workers_and_a_scheduler_are_refused_for_one_source(tmp_path):
    result = cxe("replay", str(FIXTURE), "--workers", "2", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--workers and --scheduler apply to several" in result.stderr


def test_without_dask_the_days_run_one_after_another_saying_so(days, tmp_path):
    """Dask made unimportable in the real command's process, as on a machine without it."""
    code = (
        "import sys; sys.modules['distributed'] = None; from engine.cli import main; "
        f"sys.argv = ['cxe', 'replay', {str(days)!r}, '--out', {str(tmp_path / 'o')!r}, "
        "'--workers', '2']; "
        "sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "Dask is not installed, so the 4 sources run one after another" in result.stderr
    assert "pip install 'cxe[parallel]'" in result.stderr
    assert len(read(tmp_path / "o" / "top.csv")) == 3 * ROWS + 999
    code = code.replace("'--workers', '2'", "'--scheduler', 'tcp://127.0.0.1:1'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "--scheduler needs Dask, which is not installed: pip install" in result.stderr


def test_small_days_run_in_this_process_and_larger_ones_on_a_cluster(days, monkeypatch):
    """Without --workers, the choice follows the days' message bytes (a zip's uncompressed)
    and the cores; a number given is kept."""
    small = expand([str(days)])
    with zipfile.ZipFile(small[0]) as shipped:
        inside = sum(i.file_size for i in shipped.infolist() if "_message_" in i.filename)
    assert message_bytes(small[0]) == inside and message_bytes(FIXTURE) == FIXTURE.stat().st_size
    workers, why = choose_workers(small, None)
    assert workers == 0 and "MB of messages in all, under 4 MB" in why
    assert choose_workers(small, 2) == (2, "")
    samples = sorted(DATA.glob("LOBSTER_SampleFile_*.zip"))
    monkeypatch.setattr(parallel, "_cores", lambda: 2)
    assert choose_workers(samples, None) == (None, "")
    monkeypatch.setattr(parallel, "_cores", lambda: 1)
    assert choose_workers(samples, None) == (0, "one core")


def test_warming_loads_every_kernel_a_day_calls():
    """After `warm_kernels`, a day's task (with counterfactuals) loads no compiled kernel
    the warm-up had not (checked in a fresh process, on every numba function of the book):
    workers started after the warm-up in the parent load the kernels from the on-disk
    cache, none compiles its own."""
    code = f"""
import sys
from numba.core.registry import CPUDispatcher
from engine.replay.parallel import lobster_day, warm_kernels
import engine.replay.counterfactual, engine.replay.runner

def signatures():
    return {{
        (mod.__name__, name): set(obj.signatures)
        for mod in list(sys.modules.values()) if mod and mod.__name__.startswith("engine")
        for name, obj in vars(mod).items() if isinstance(obj, CPUDispatcher)
    }}

warm_kernels()
before = signatures()
assert lobster_day({str(FIXTURE)!r}, 60, True).code == 0
after = signatures()
print(sorted(k for k, v in after.items() if v - before.get(k, set())))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def profiler_setting(source: str) -> SourceRun:
    import dask

    return SourceRun(source, str(dask.config.get("distributed.worker.profile.enabled")))


def test_local_workers_run_without_the_dask_profiler(days):
    """Its sampling thread cost the replay's workers CPU and the GIL."""
    pytest.importorskip("distributed")
    sources = expand([str(days)])[:2]
    runs = run_sources(profiler_setting, sources, workers=2, progress=None)
    assert [run.summary for run in runs] == ["False", "False"]
