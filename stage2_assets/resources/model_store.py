"""The model store: versions on disk, the production pointer, the append-only event log.

```
models/
  versions/vYYYYMMDD-HHMMSS/   weights.safetensors, metadata.json, checksums.json
  production -> versions/v...  symlink, swapped atomically (os.replace of a fresh link)
  events.jsonl                 trained / promoted / rolled back / pruned, with the reason
```
A version is written under a temporary name and renamed into place, so it appears whole or not at
all; it is never overwritten. Loading verifies SHA-256 checksums and reads tensors only
(safetensors): nothing is unpickled, no code runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
from pydantic import Field

from stage2_assets.errors import ModelStoreError
from stage2_assets.faults import fault_point
from stage2_assets.names import validate_version
from stage2_assets.processes import pid_alive

WEIGHTS = "weights.safetensors"
METADATA = "metadata.json"
CHECKSUMS = "checksums.json"
# events that move the production pointer
POINTER_MOVES = ("promoted", "rolled_back", "manual_promote")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _temp_name(prefix: str) -> str:
    """A temporary name that records its writer's process, so a dead writer's leftovers are known."""
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex}"


def _writer_pid(name: str, prefix: str) -> int | None:
    pid = name[len(prefix) :].split("-", 1)[0]
    return int(pid) if name.startswith(prefix) and pid.isdigit() else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore(dg.ConfigurableResource):
    """Versions of the ensemble on disk, the production pointer and the audit log."""

    root: str = Field(description="Model store folder (storage.models).")

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def versions_dir(self) -> Path:
        return self.path / "versions"

    # --- writing -------------------------------------------------------------------------

    def save_version(
        self, tensors: dict, metadata: dict, now: dt.datetime | None = None, writer=None
    ) -> str:
        """Write a new version whole or not at all; return its name. ``writer`` replaces the
        safetensors writer (tests simulate a full disk with it)."""
        from safetensors.torch import save_file

        writer = writer or save_file
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        moment = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        self.sweep_leftovers()
        tmp = self.versions_dir / _temp_name(".tmp-")
        tmp.mkdir()
        try:
            writer({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
            while (
                True
            ):  # the store never overwrites: two versions in one second take the next second
                name = moment.strftime("v%Y%m%d-%H%M%S")
                if not (self.versions_dir / name).exists():
                    break
                moment += dt.timedelta(seconds=1)
            (tmp / METADATA).write_text(
                json.dumps({**metadata, "version": name}, indent=2, sort_keys=True, default=str)
            )
            checksums = {WEIGHTS: sha256_file(tmp / WEIGHTS), METADATA: sha256_file(tmp / METADATA)}
            (tmp / CHECKSUMS).write_text(json.dumps(checksums, indent=2))
            for file in (WEIGHTS, METADATA, CHECKSUMS):
                with (tmp / file).open("rb") as handle:
                    os.fsync(handle.fileno())
            fault_point("version_write")  # every file written, not yet renamed into place
            os.rename(tmp, self.versions_dir / name)
            _fsync_dir(self.versions_dir)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise ModelStoreError(
                    f"could not write a new version in {self.versions_dir}: {exc}; the store is unchanged"
                ) from exc
            raise
        # the cut-off and label rule travel in the event log too: a replay's arms are built from the
        # log, so a version pruned later still counts where it would have served
        self.append_event(
            "trained",
            name,
            reason=metadata.get("reason", "weekly retraining"),
            cutoff=metadata.get("cutoff"),
            label_rule=metadata.get("label_rule"),
        )
        return name

    def sweep_leftovers(self) -> list[str]:
        """Remove half-written versions and pointer links whose writer died (a kill mid-write).

        Only entries whose writer process is gone are touched; a live writer's are left alone.
        """
        removed = []
        for folder, prefix in ((self.versions_dir, ".tmp-"), (self.path, ".production-")):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                pid = _writer_pid(entry.name, prefix)
                if pid is None or pid_alive(pid):
                    continue
                if entry.is_symlink() or entry.is_file():
                    entry.unlink(missing_ok=True)
                else:
                    shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def append_event(self, event: str, version: str | None, reason: str, **extra) -> dict:
        record = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "event": event,
            "version": version,
            "reason": reason,
            **extra,
        }
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / "events.jsonl").open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def set_production(self, version: str, event: str, reason: str, **extra) -> dict:
        """Point production at a complete version, atomically, and log why."""
        self.verify(version)
        previous = self.production()
        link = self.path / "production"
        self.sweep_leftovers()
        tmp = self.path / _temp_name(".production-")
        os.symlink(Path("versions") / version, tmp)
        fault_point("pointer_swap")  # the new link exists under a temporary name
        os.replace(tmp, link)
        _fsync_dir(self.path)
        return self.append_event(event, version, reason, previous=previous, **extra)

    # --- reading -------------------------------------------------------------------------

    def version_path(self, version: str) -> Path:
        name = validate_version(version)
        path = self.versions_dir / name
        if not path.is_dir():
            raise ModelStoreError(
                f"version {name} is not in the model store {self.versions_dir} (see `stage2 versions`)"
            )
        return path

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def production(self) -> str | None:
        link = self.path / "production"
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def verify(self, version: str) -> Path:
        """Check a version's files against its checksums; raise ModelStoreError naming the fault."""
        path = self.version_path(version)
        try:
            expected = json.loads((path / CHECKSUMS).read_text())
        except (OSError, ValueError) as exc:
            raise ModelStoreError(
                f"version {version}: {CHECKSUMS} is missing or unreadable ({exc})"
            ) from None
        for file in (WEIGHTS, METADATA):
            if not (path / file).is_file():
                raise ModelStoreError(f"version {version}: {file} is missing")
            if sha256_file(path / file) != expected.get(file):
                raise ModelStoreError(
                    f"version {version}: {file} does not match its checksum (corrupted or tampered)"
                )
        return path

    def metadata(self, version: str) -> dict:
        path = self.verify(version)
        return json.loads((path / METADATA).read_text())

    def load(self, version: str) -> tuple[dict, dict]:
        """(tensors, metadata) of a verified version; tensors only, nothing unpickled."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.verify(version)
        try:
            tensors = load_file(str(path / WEIGHTS))
        except (SafetensorError, OSError) as exc:
            raise ModelStoreError(
                f"version {version}: {WEIGHTS} is not a safetensors file ({exc})"
            ) from None
        return tensors, json.loads((path / METADATA).read_text())

    def events(self) -> list[dict]:
        path = self.path / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def production_history(self) -> list[str]:
        """Every version production has pointed to, oldest first."""
        seen: list[str] = []
        for event in self.events():
            if event["event"] in POINTER_MOVES and event.get("version"):
                seen.append(event["version"])
        return seen

    def pending_approvals(self) -> list[dict]:
        """Candidates that passed their comparison under ``approval: manual`` and wait for a
        person: their ``awaiting_approval`` event, not yet followed by an approval (a move to them)
        or a rejection, oldest first."""
        pending: dict[str, dict] = {}
        for event in self.events():
            version = event.get("version")
            if event["event"] == "awaiting_approval":
                pending[version] = event
            elif event["event"] == "rejected" or event["event"] in POINTER_MOVES:
                pending.pop(version, None)
        return list(pending.values())

    def trained_cutoffs(self) -> dict[str, str]:
        """{version: cut-off} of every version this store ever trained, pruned ones included (from
        the event log; a version from before cut-offs were logged: from its metadata, if kept)."""
        out: dict[str, str] = {}
        for event in self.events():
            if event["event"] == "trained" and event.get("version"):
                out[event["version"]] = event.get("cutoff")
        kept = set(self.versions())
        for version in [v for v, c in out.items() if c is None] + sorted(kept - set(out)):
            out[version] = self.metadata(version)["cutoff"] if version in kept else None
        return {v: c for v, c in out.items() if c is not None}

    def prune(self, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Delete all but the newest ``keep`` versions, sparing every version production used and
        the ``protect``ed ones (candidates still in shadow, a replay's reference arms)."""
        protected = set(self.production_history()) | {self.production()} | set(protect)
        candidates = [v for v in self.versions() if v not in protected]
        removed = candidates[: max(len(candidates) - keep, 0)]
        for version in removed:
            shutil.rmtree(self.versions_dir / version)
            self.append_event(
                "pruned", version, reason=f"retention keeps the newest {keep} versions"
            )
        return removed
