"""production_pointer: which version serves, moved only by a passing comparison or an explicit act."""

import dagster as dg
from pydantic import Field

from stage2_assets.assets.monitoring import model_performance
from stage2_assets.assets.shadow import shadow_comparison
from stage2_assets.errors import Stage2Error
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.promotion.pointer import approve, decide, manual_promote, reject, rollback
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

ACTIONS = ("decide", "promote", "rollback", "approve", "reject")


class PointerRequest(dg.Config):
    action: str = Field(
        "decide",
        description="decide (the weekly rule), promote (a named version), rollback, or approve / "
        "reject (a candidate waiting for approval).",
    )
    version: str = Field(
        "", description="Version to promote or roll back to (rollback: empty = the previous one)."
    )
    reason: str = Field("", description="Why, for the audit log.")
    as_of: str = Field(
        "",
        description="The as-of date the move is dated by (YYYY-MM-DD; empty: the run's as-of). "
        "Pointer history and `status --at` read it.",
    )


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="deployment",
    kinds={"pytorch"},
    deps=[shadow_comparison, model_performance],
)
def production_pointer(
    context: dg.AssetExecutionContext,
    config: PointerRequest,
    warehouse: Warehouse,
    model_store: ModelStore,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """The version production serves (``models/production``, swapped atomically) and why.

    Promises: it moves only on a ``promote`` decision of shadow_comparison (several on one run:
    the model confidence set chooses), the bootstrap rule (the first model of a label rule must
    beat both naive baselines), an automatic rollback of a degraded production to a previous
    version that the gate finds better on the rows after the alert, or an explicit
    promote/rollback; each move is logged with its reason.
    """
    if config.action not in ACTIONS:
        raise Stage2Error(
            f"production_pointer action {config.action!r} is not one of {', '.join(ACTIONS)}"
        )
    as_of = as_of_date(context)
    dated = config.as_of or as_of.isoformat()
    if config.action == "promote":
        outcome = manual_promote(model_store, config.version, config.reason, dated)
    elif config.action == "rollback":
        outcome = rollback(model_store, config.version or None, config.reason, dated)
    elif config.action == "approve":
        outcome = approve(model_store, config.version, config.reason, dated)
    elif config.action == "reject":
        outcome = reject(model_store, config.version, config.reason)
    else:
        settings = stage2_settings.get()
        with warehouse.connect() as conn:
            row = conn.execute(
                "SELECT * FROM degradation_log WHERE as_of = ? AND model_version = ?",
                [as_of, model_store.production() or ""],
            ).df()
            degradation = row.iloc[0].to_dict() if not row.empty else None
            outcome = decide(
                conn, model_store, as_of, settings.ab_testing, degradation, settings.label_rule
            )
    context.log.info(
        f"production_pointer: {outcome['action']} {outcome['version']}: {outcome['reason']}"
    )
    if (
        outcome["action"] == "none" and config.action == "decide"
    ):  # why it did not move goes to the audit log too
        model_store.append_event(
            "pointer_unchanged",
            model_store.production(),
            outcome["reason"],
            as_of=as_of.isoformat(),
            run_id=context.run.run_id,
        )
    return dg.MaterializeResult(
        metadata={
            "production": dg.MetadataValue.text(model_store.production() or "none"),
            "action": dg.MetadataValue.text(outcome["action"]),
            "reason": dg.MetadataValue.text(outcome["reason"]),
            "moved": dg.MetadataValue.bool(outcome["action"] not in ("none", "rejected")),
        }
    )
