"""The model store: whole versions, verified loads, an atomic pointer, an append-only log."""

import json

import pytest
import torch

from stage2_assets.errors import InvalidNameError, ModelStoreError
from stage2_assets.resources.model_store import ModelStore


def _tensors(value: float = 1.0) -> dict:
    return {"model.w1": torch.full((2, 14, 4), value), "scaler.mean": torch.zeros(14)}


@pytest.fixture
def store(tmp_path):
    return ModelStore(root=str(tmp_path / "models"))


def test_saved_version_is_complete_and_verified(store):
    version = store.save_version(_tensors(), {"cutoff": "2025-06-27"})
    assert store.versions() == [version]
    tensors, metadata = store.load(version)
    assert torch.equal(tensors["model.w1"], _tensors()["model.w1"])
    assert metadata["version"] == version and metadata["cutoff"] == "2025-06-27"
    assert [e["event"] for e in store.events()] == ["trained"]


def test_the_store_never_overwrites_a_version(store):
    first = store.save_version(_tensors(1.0), {})
    second = store.save_version(_tensors(2.0), {})
    assert first != second and len(store.versions()) == 2
    assert store.load(first)[0]["model.w1"][0, 0, 0] == 1.0


def test_a_dead_writers_leftovers_are_swept_and_a_live_writers_are_not(store):
    import os
    import subprocess
    import sys

    first = store.save_version(_tensors(), {})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # the process has exited
    half_written = store.versions_dir / f".tmp-{dead_pid}-abc"
    half_written.mkdir()
    (half_written / "weights.safetensors").write_bytes(b"partial")
    link = store.path / f".production-{dead_pid}-abc"
    os.symlink(f"versions/{first}", link)
    live = store.versions_dir / f".tmp-{os.getpid()}-def"
    live.mkdir()

    store.set_production(first, "promoted", reason="test")

    assert not half_written.exists() and not os.path.lexists(link)
    assert live.is_dir()  # this process is alive: its write may be under way
    assert store.versions() == [first]


def test_a_failing_writer_leaves_no_partial_version(store):
    store.save_version(_tensors(), {})

    def disk_full(tensors, path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ModelStoreError, match="No space left on device.*store is unchanged"):
        store.save_version(_tensors(), {}, writer=disk_full)
    assert len(store.versions()) == 1
    assert [p.name for p in store.versions_dir.iterdir() if p.name.startswith(".")] == []


def test_corrupted_weights_or_tampered_metadata_are_refused(store):
    version = store.save_version(_tensors(), {"cutoff": "2025-06-27"})
    path = store.version_path(version)
    meta = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps({**meta, "cutoff": "2099-01-01"}))
    with pytest.raises(
        ModelStoreError, match=f"version {version}: metadata.json does not match its checksum"
    ):
        store.load(version)
    other = store.save_version(_tensors(), {})
    weights = store.version_path(other) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.raises(ModelStoreError, match="weights.safetensors does not match its checksum"):
        store.load(other)


def test_a_pickle_in_place_of_weights_is_never_executed(store, tmp_path):
    import hashlib
    import pickle

    version = store.save_version(_tensors(), {})
    path = store.version_path(version)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (path / "weights.safetensors").write_bytes(pickle.dumps(Payload()))
    checksums = json.loads((path / "checksums.json").read_text())
    checksums["weights.safetensors"] = hashlib.sha256(
        (path / "weights.safetensors").read_bytes()
    ).hexdigest()
    (path / "checksums.json").write_text(
        json.dumps(checksums)
    )  # the attacker fixed the checksum too
    with pytest.raises(ModelStoreError, match="not a safetensors file"):
        store.load(version)
    assert not marker.exists()


def test_pointer_moves_atomically_and_every_move_is_logged(store):
    first = store.save_version(_tensors(), {})
    second = store.save_version(_tensors(), {})
    assert store.production() is None
    store.set_production(first, "promoted", "bootstrap: beat both baselines")
    store.set_production(second, "promoted", "shadow comparison passed")
    store.set_production(first, "rolled_back", "operator request")
    assert store.production() == first
    moves = [
        (e["event"], e["version"], e.get("previous"))
        for e in store.events()
        if e["event"] != "trained"
    ]
    assert moves == [
        ("promoted", first, None),
        ("promoted", second, first),
        ("rolled_back", first, second),
    ]
    assert (store.path / "production").resolve() == store.version_path(first).resolve()


def test_unknown_or_hostile_version_names_change_nothing(store):
    version = store.save_version(_tensors(), {})
    store.set_production(version, "promoted", "first")
    for bad in ["../x", "v20990101-000000"]:
        with pytest.raises((InvalidNameError, ModelStoreError)):
            store.set_production(bad, "promoted", "hostile")
    assert store.production() == version


def test_retention_keeps_the_newest_and_every_production_version(store):
    versions = [store.save_version(_tensors(), {}) for _ in range(5)]
    store.set_production(versions[0], "promoted", "first")
    removed = store.prune(keep=2)
    assert removed == versions[1:3]
    assert store.versions() == [versions[0], versions[3], versions[4]]
