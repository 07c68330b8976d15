"""Lightning training of the batched ensemble: the module knows the model and its loss, the data
module knows the data, the Trainer is configured from outside (``accelerator="auto"``)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from stage2_assets.ml.ensemble import BatchedMLP

# Lightning's banner ("GPU available: False, used: False", "TPU available", its advertisement for a
# cloud logger) is info on this logger; the device used is recorded in each version's metadata.
# Its warnings still come through.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


class EnsembleModule(L.LightningModule):
    """The batched ensemble and its loss. The optimizer steps by hand (Lightning's manual
    optimization): the same zero_grad, backward and Adam step as its automatic loop, without the
    closure and the per-step logging that cost about a quarter of a step on this small model; the
    training loss is summed on the module and logged once per epoch. Weights are bit-identical
    to the automatic loop's (a test replays both)."""

    def __init__(
        self, num_members: int, num_features: int, hidden: int, learning_rate: float, base_seed: int
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model = BatchedMLP(num_members, num_features, hidden, base_seed)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self._train_sum = torch.zeros(())
        self._train_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self.model(x)
        target = y.unsqueeze(0).expand_as(logits)
        if len(batch) == 3:  # recency weights: the weighted mean of the rows' losses
            weights = batch[2].unsqueeze(0).expand_as(logits)
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="none"
            )
            # weights have a mean of 1 over the training set: a batch's loss is their weighted
            # mean, never 0 / 0 where a batch holds only very old rows
            return (losses * weights).mean()
        # Every member sees the same batch; the mean of their losses trains each one on its own.
        return self.loss(logits, target)

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self._loss(batch)
        self.manual_backward(loss)
        optimizer.step()
        rows = len(batch[1])
        self._train_sum = self._train_sum.to(loss.device) + loss.detach() * rows
        self._train_rows += rows

    def on_train_epoch_end(self) -> None:
        if self._train_rows:
            self.log("train/loss", self._train_sum / self._train_rows)
        self._train_sum, self._train_rows = torch.zeros(()), 0

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
        return loss

    def configure_optimizers(self):
        # foreach: one kernel per update over all parameters, the same arithmetic as the loop
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate, foreach=True)


class ArrayDataModule(L.LightningDataModule):
    """Scaled arrays in memory. Batches are fetched whole (a BatchSampler as sampler), not row by row."""

    def __init__(
        self, x_train, y_train, x_val, y_val, batch_size: int, seed: int, weights=None
    ) -> None:
        super().__init__()
        train = [torch.as_tensor(x_train), torch.as_tensor(y_train, dtype=torch.float32)]
        if weights is not None:
            train.append(torch.as_tensor(weights, dtype=torch.float32))
        self.train_set = TensorDataset(*train)
        self.val_set = TensorDataset(
            torch.as_tensor(x_val), torch.as_tensor(y_val, dtype=torch.float32)
        )
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        sampler = BatchSampler(
            RandomSampler(self.train_set, generator=generator), self.batch_size, drop_last=False
        )
        return DataLoader(self.train_set, sampler=sampler, batch_size=None)

    def val_dataloader(self):
        sampler = BatchSampler(SequentialSampler(self.val_set), 8192, drop_last=False)
        return DataLoader(self.val_set, sampler=sampler, batch_size=None)


class KeepBest(L.Callback):
    """Keeps the weights of the epoch with the lowest val/loss, in memory (no checkpoint files)."""

    def __init__(self) -> None:
        self.best_loss = float("inf")
        self.best_state: dict | None = None
        self.best_epoch = -1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val/loss"])
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, trainer.current_epoch
            self.best_state = copy.deepcopy(pl_module.model.state_dict())


@dataclass
class TrainingResult:
    model: BatchedMLP
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    seconds: float
    device: str
    history: list[float] = field(default_factory=list)


def train_ensemble(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    num_members: int,
    hidden: int,
    learning_rate: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
    trainer_overrides: dict | None = None,
    weights: np.ndarray | None = None,
) -> TrainingResult:
    """Train the batched ensemble with early stopping on val/loss; return the best epoch's weights.

    Deterministic on CPU for a given seed. ``trainer_overrides`` reach the Trainer (a test passes
    ``{"fast_dev_run": True}``; a GPU box may pass ``{"precision": "16-mixed"}``). ``weights``: one
    per training row (recency), the validation loss stays unweighted.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    module = EnsembleModule(num_members, x_train.shape[1], hidden, learning_rate, seed)
    data = ArrayDataModule(x_train, y_train, x_val, y_val, batch_size, seed, weights)
    keep = KeepBest()
    trainer = L.Trainer(
        **_trainer_settings(
            max_epochs,
            [
                L.pytorch.callbacks.EarlyStopping(
                    monitor="val/loss", patience=patience, mode="min"
                ),
                keep,
            ],
            trainer_overrides,
        )
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - started
    model = module.model.cpu()
    if keep.best_state is not None:
        model.load_state_dict({k: v.cpu() for k, v in keep.best_state.items()})
    return TrainingResult(
        model=model,
        best_epoch=keep.best_epoch,
        epochs_run=trainer.current_epoch,
        best_val_loss=keep.best_loss,
        seconds=seconds,
        device=str(trainer.strategy.root_device),
    )


def _trainer_settings(max_epochs: int, callbacks: list, overrides: dict | None) -> dict:
    settings = dict(
        accelerator="auto",
        devices=1,
        max_epochs=max_epochs,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    settings.update(overrides or {})
    return settings


def refit_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    num_members: int,
    hidden: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    trainer_overrides: dict | None = None,
    weights: np.ndarray | None = None,
) -> TrainingResult:
    """Train the batched ensemble from scratch for exactly ``epochs`` epochs on every row given,
    with nothing held out: the refit of a window once a first fit's early stopping has chosen the
    epoch count. Same seed, same initial weights, same loop as ``train_ensemble``."""
    L.seed_everything(seed, workers=True, verbose=False)
    module = EnsembleModule(num_members, x.shape[1], hidden, learning_rate, seed)
    none = np.zeros((0, x.shape[1]), dtype=np.float32)
    data = ArrayDataModule(x, y, none, none[:, 0], batch_size, seed, weights)
    trainer = L.Trainer(
        **_trainer_settings(epochs, [], {**(trainer_overrides or {}), "limit_val_batches": 0})
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return TrainingResult(
        model=module.model.cpu(),
        best_epoch=epochs - 1,
        epochs_run=trainer.current_epoch,
        best_val_loss=float("nan"),
        seconds=time.perf_counter() - started,
        device=str(trainer.strategy.root_device),
    )
