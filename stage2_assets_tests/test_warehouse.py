"""The warehouse's connections: a file attached to the process's DuckDB instance while in use."""

import subprocess
import sys
import threading

import pytest

from stage2_assets.errors import Stage2Error
from stage2_assets.resources.warehouse import Warehouse

# Another process opens the file for writing and prints what it could do.
_OTHER_PROCESS = """
import duckdb, sys
try:
    conn = duckdb.connect(sys.argv[1])
except duckdb.IOException as exc:
    print("refused:", "lock" in str(exc).lower())
else:
    print("opened:", conn.execute("SELECT count(*) FROM raw_bars").fetchall()[0][0])
    conn.close()
"""


def _other_process(path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)], capture_output=True, text=True
    )
    return done.stdout.strip()


def test_the_file_is_held_while_a_connection_is_open_and_released_when_the_last_one_closes(
    tmp_path,
):
    path = tmp_path / "it's a store" / "stage2.duckdb"  # a quote in the path reaches no SQL raw
    warehouse = Warehouse(database=str(path))
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO raw_bars (symbol, date, source) VALUES ('AAA', DATE '2024-01-02', 't')"
        )
        with warehouse.connect(read_only=True) as reader:  # a reader shares the writer's file
            assert reader.execute("SELECT count(*) FROM raw_bars").fetchall() == [(1,)]
        assert _other_process(path) == "refused: True"  # still held: the writer is open
    assert not path.with_name("stage2.duckdb.wal").exists()  # checkpointed on release
    assert _other_process(path) == "opened: 1"
    assert warehouse.query_df("SELECT symbol FROM raw_bars")["symbol"].tolist() == ["AAA"]


def test_a_write_while_this_process_reads_the_file_is_refused_by_name(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "stage2.duckdb"))
    with warehouse.connect():
        pass  # the file and its tables
    with (
        warehouse.connect(read_only=True),
        pytest.raises(Stage2Error) as refused,
        warehouse.connect(),
    ):
        pass
    assert f"warehouse {tmp_path / 'stage2.duckdb'} is open read-only in this process" in str(
        refused.value
    )
    with warehouse.connect() as conn:  # the reader closed: writing works again
        assert conn.execute("SELECT count(*) FROM raw_bars").fetchall() == [(0,)]


def test_two_warehouses_in_one_process_keep_their_own_tables(tmp_path):
    first = Warehouse(database=str(tmp_path / "a.duckdb"))
    second = Warehouse(database=str(tmp_path / "b.duckdb"))
    with first.connect() as a, second.connect() as b:
        a.execute(
            "INSERT INTO raw_bars (symbol, date, source) VALUES ('AAA', DATE '2024-01-02', 't')"
        )
        assert b.execute("SELECT count(*) FROM raw_bars").fetchall() == [(0,)]
    assert first.query_df("SELECT count(*) AS n FROM raw_bars")["n"].tolist() == [1]
    assert second.query_df("SELECT count(*) AS n FROM raw_bars")["n"].tolist() == [0]


def test_a_write_from_another_thread_waits_for_this_process_readers_then_runs(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "stage2.duckdb"))
    with warehouse.connect():
        pass
    started, wrote, failed = threading.Event(), threading.Event(), []

    def write():
        started.set()
        try:
            with warehouse.connect() as conn:
                conn.execute(
                    "INSERT INTO raw_bars (symbol, date, source) VALUES ('AAA', DATE '2024-01-02', 't')"
                )
            wrote.set()
        except Exception as exc:  # reported below, on the test's thread
            failed.append(exc)

    with warehouse.connect(read_only=True) as reader:
        writer = threading.Thread(target=write)
        writer.start()
        started.wait(10)
        assert not wrote.wait(0.5)  # held back while the read is open
        assert reader.execute("SELECT count(*) FROM raw_bars").fetchall() == [(0,)]
    writer.join(30)
    assert failed == [] and wrote.is_set()
    assert warehouse.query_df("SELECT symbol FROM raw_bars")["symbol"].tolist() == ["AAA"]


def test_what_spilled_to_disk_is_removed_when_the_last_connection_closes(tmp_path):
    path = tmp_path / "stage2.duckdb"
    warehouse = Warehouse(
        database=str(path), connection_config={"memory_limit": "60MB", "threads": 1}
    )
    spill = tmp_path / "stage2.duckdb.tmp"
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE big AS SELECT i, random() AS r FROM range(3000000) t(i)")
        conn.execute("SELECT count(*) FROM (SELECT * FROM big ORDER BY r DESC)").fetchall()
        assert spill.is_dir()  # over its 60 MB the sort spilled beside the file
    assert not spill.exists()
    with warehouse.connect(read_only=True) as conn:  # and the store opens again as before
        assert conn.execute("SELECT count(*) FROM big").fetchall() == [(3_000_000,)]
