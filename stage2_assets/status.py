"""What ``stage2 status`` reports: read straight from the stores, no Dagster run needed."""

from __future__ import annotations

from stage2_assets.config import Settings
from stage2_assets.market.refresh import stored_source, summarize_log
from stage2_assets.market.validation import quarantine_rows
from stage2_assets.resources.warehouse import Warehouse

TABLES = ("raw_bars", "validated_bars", "features")


def collect_status(settings: Settings) -> dict:
    """The ``stage2 status --json`` document (keys are a contract: add, never rename)."""
    warehouse = Warehouse(database=str(settings.warehouse_path))
    with warehouse.connect(read_only=True) as conn:
        tables = {}
        for table in TABLES:
            rows, symbols, first, last = conn.execute(
                f"SELECT count(*), count(DISTINCT symbol), min(date), max(date) FROM {table}"
            ).fetchone()
            tables[table] = {
                "rows": int(rows),
                "symbols": int(symbols),
                "first_date": first.isoformat() if first else None,
                "last_date": last.isoformat() if last else None,
            }
        last_run = conn.execute(
            "SELECT run_id FROM refresh_log ORDER BY logged_at DESC LIMIT 1"
        ).fetchone()
        log = conn.execute(
            "SELECT * FROM refresh_log WHERE run_id = ?", [last_run[0] if last_run else ""]
        ).df()
        source = stored_source(conn)
        quarantine = quarantine_rows(conn)
    return {
        "source": source or settings.data_source.kind,
        "warehouse": str(settings.warehouse_path),
        "tables": tables,
        "quarantine": quarantine,
        "last_refresh": summarize_log(log),
    }
