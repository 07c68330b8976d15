"""Backup and restore of the warehouse and the model store.

A backup is a folder: ``warehouse.duckdb`` (copied while a read-only connection keeps writers out,
so the copy is consistent), ``models/`` (versions, events log, the production symlink as a link),
``archive/predictions/`` (the Parquet files, from ``<warehouse>.archive/predictions``, of predictions past their retention), and
``manifest.json`` (SHA-256 of every file, and the ``stage2 status --json`` it was taken with).
Restore verifies every checksum first and never overwrites: it refuses a target that holds data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from stage2_assets.errors import Stage2Error
from stage2_assets.resources.model_store import sha256_file
from stage2_assets.resources.warehouse import Warehouse


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def backup(settings, target: Path) -> dict:
    from stage2_assets.status import collect_status

    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise Stage2Error(f"backup folder {target} is not empty; choose a new folder")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    status = collect_status(settings)
    warehouse = Warehouse(database=str(settings.warehouse_path))
    if settings.warehouse_path.exists():
        with warehouse.connect(read_only=True):  # no writer while we copy
            shutil.copy2(settings.warehouse_path, tmp / "warehouse.duckdb")
    if settings.models_path.exists():
        shutil.copytree(settings.models_path, tmp / "models", symlinks=True)
    archive = settings.predictions_archive_path
    if archive.is_dir():
        shutil.copytree(archive, tmp / "archive" / "predictions")
    manifest = {
        "files": _files(tmp),
        "status": status,
        "source_warehouse": str(settings.warehouse_path),
        "source_models": str(settings.models_path),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    if target.exists():
        target.rmdir()
    os.replace(tmp, target)
    return manifest


def restore(settings, source: Path) -> dict:
    source = Path(source)
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise Stage2Error(f"{source} is not a stage2 backup (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    actual = _files(source)
    actual.pop("manifest.json", None)
    for name, digest in manifest["files"].items():
        if actual.get(name) != digest:
            raise Stage2Error(
                f"backup file {name} is missing or does not match its checksum; nothing was restored"
            )
    models = settings.models_path
    if settings.warehouse_path.exists():
        raise Stage2Error(
            f"warehouse {settings.warehouse_path} already exists; restore only into an empty place"
        )
    if models.exists() and any(models.iterdir()):
        raise Stage2Error(f"model store {models} is not empty; restore only into an empty place")
    archive = settings.predictions_archive_path
    if archive.exists() and any(archive.iterdir()):
        raise Stage2Error(
            f"predictions archive {archive} is not empty; restore only into an empty place"
        )
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    if (source / "warehouse.duckdb").exists():
        shutil.copy2(source / "warehouse.duckdb", settings.warehouse_path.with_suffix(".restoring"))
        os.replace(settings.warehouse_path.with_suffix(".restoring"), settings.warehouse_path)
    if (source / "models").exists():
        if models.exists():
            models.rmdir()
        shutil.copytree(source / "models", models, symlinks=True)
    if (source / "archive" / "predictions").is_dir():
        shutil.copytree(source / "archive" / "predictions", archive, dirs_exist_ok=True)
    return manifest
