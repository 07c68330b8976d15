"""Who served when: the production pointer's moves from the store's event log, and the version in
force on a given date.

A move's ``date`` is its as-of date: the replayed date in a replay, the run's as-of live; a manual
move made outside a dated run carries the day it was made. A move dated D takes effect for the
predictions of the days after D: on D itself the previous version had already predicted.
"""

from __future__ import annotations

import datetime as dt

from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore

STATISTICS = ("effect", "lower_bound", "p_value", "days", "rows", "accuracy_diff", "p_mcnemar")


def _how(event: dict) -> str:
    if event["event"] == "rolled_back":
        return "rollback"
    if event["event"] == "manual_promote":
        return "manual"
    return "bootstrap" if str(event.get("reason", "")).startswith("bootstrap") else "promote"


def pointer_history(store: ModelStore) -> list[dict]:
    """Every pointer move, oldest first."""
    out = []
    for event in store.events():
        if event["event"] not in POINTER_MOVES or not event.get("version"):
            continue
        out.append(
            {
                "date": event.get("as_of") or event["at"][:10],
                "at": event["at"],
                "version": event["version"],
                "previous": event.get("previous"),
                "how": _how(event),
                "reason": event.get("reason", ""),
                **{k: event[k] for k in STATISTICS if k in event},
            }
        )
    return out


def serving_on(store: ModelStore, day: dt.date) -> dict | None:
    """The move in force for the predictions of ``day`` (the last one dated before it), or None."""
    before = [
        (move["date"], i, move)
        for i, move in enumerate(pointer_history(store))
        if dt.date.fromisoformat(move["date"]) < day
    ]
    return max(before, key=lambda item: item[:2])[2] if before else None
