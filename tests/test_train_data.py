"""The preprocessed-image cache never serves crops made by older preprocessing code."""
from __future__ import annotations

from pathlib import Path

from train import data


def test_cache_key_follows_the_preprocessing_code(tmp_path, monkeypatch):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not read, only stat'ed")
    key = data.cache_key(photo, 224, {"clahe": True})
    assert key == data.cache_key(photo, 224, {"clahe": True})
    assert key != data.cache_key(photo, 256, {"clahe": True})
    assert key != data.cache_key(photo, 224, {"clahe": False})

    monkeypatch.setattr(data, "_preprocessing_code_version", lambda: "changed-code")
    assert data.cache_key(Path(photo), 224, {"clahe": True}) != key


def test_code_version_hashes_the_fundus_sources():
    data._preprocessing_code_version.cache_clear()
    version = data._preprocessing_code_version()
    assert len(version) == 12 and int(version, 16) >= 0
