"""Today, as the exchange counts days.

The weekly partitions, every as-of date and every "lies in the future" refusal count days in the
partitions' time zone (``data_refresh.timezone``, America/New_York by default), not the machine's:
at 01:00 UTC on a Sunday it is still Saturday in New York, and the week that Sunday opens does not
exist yet as a partition. A run started then answers for Saturday.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def today(now: dt.datetime | None = None) -> dt.date:
    """The date in the weekly partitions' time zone at ``now`` (default: this instant)."""
    from stage2_assets.partitions import weekly_partitions

    zone = ZoneInfo(weekly_partitions.timezone)
    return (now.astimezone(zone) if now is not None else dt.datetime.now(zone)).date()
