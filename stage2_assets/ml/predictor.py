"""Load a stored version and predict: probability of up and confidence per (symbol, date)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stage2_assets.errors import ModelStoreError
from stage2_assets.ml.ensemble import BatchedMLP, member_probabilities
from stage2_assets.ml.features import FEATURE_COLUMNS
from stage2_assets.ml.metrics import confidence


class EnsemblePredictor:
    def __init__(self, tensors: dict, metadata: dict) -> None:
        if list(metadata.get("features", [])) != list(FEATURE_COLUMNS):
            raise ModelStoreError(
                f"version {metadata.get('version')} was trained on another feature set"
            )
        try:
            w1 = tensors["model.w1"]
            self.model = BatchedMLP(w1.shape[0], w1.shape[1], w1.shape[2])
            self.model.load_state_dict(
                {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
            )
            self.mean = tensors["scaler.mean"].numpy()
            self.std = tensors["scaler.std"].numpy()
        except (KeyError, RuntimeError, IndexError) as exc:
            raise ModelStoreError(
                f"version {metadata.get('version')}: weights do not fit the ensemble ({exc})"
            ) from None
        self.version = metadata.get("version")
        self.metadata = metadata

    @classmethod
    def load(cls, store, version: str | None = None) -> EnsemblePredictor:
        chosen = version or store.production()
        if chosen is None:
            raise ModelStoreError(
                "no production version yet: train one (`stage2 train`) and promote it"
            )
        return cls(*store.load(chosen))

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """prob_up (mean of the members) and confidence for each row of ``features``."""
        values = features[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            raise ModelStoreError("features hold NaN or infinite values; re-materialize features")
        members = member_probabilities(
            self.model, ((values - self.mean) / self.std).astype(np.float32)
        )
        prob_up = members.mean(axis=0) if members.size else np.empty(0)
        return pd.DataFrame(
            {
                "symbol": features["symbol"].to_numpy(),
                "date": features["date"].to_numpy(),
                "prob_up": prob_up,
                "confidence": confidence(prob_up),
                "member_std": members.std(axis=0) if members.size else np.empty(0),
            }
        )
