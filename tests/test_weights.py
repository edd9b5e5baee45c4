"""Weights are data that is checked: a file is used only if its sha256 matches its manifest entry;
a damaged manifest is set aside, never fatal; every write is whole or not at all."""

import json
import shutil

import pytest
import torch

from backends.models.vae import load_vae, shipped_path
from backends.models.weights import (
    MANIFEST_NAME,
    WEIGHTS_DIR,
    WeightsError,
    load_weights,
    read_entry,
    read_manifest,
    save_weights,
    sha256_of,
    update_manifest,
    write_atomically,
)


def test_every_shipped_weights_file_matches_its_manifest():
    manifest = read_manifest(WEIGHTS_DIR)
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert files
    for path in files:
        assert manifest[path.name]["sha256"] == sha256_of(path), path.name


@pytest.fixture
def vae_copy(tmp_path):
    """A shipped VAE and its manifest, copied where they may be damaged."""
    src = shipped_path("sprites_beta1")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({src.name: read_manifest(WEIGHTS_DIR)[src.name]}))
    return dst


def test_a_flipped_byte_is_refused_naming_the_file(vae_copy):
    load_vae(vae_copy)  # intact: loads
    data = bytearray(vae_copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    vae_copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=f"{vae_copy.name} is damaged: its sha256"):
        load_vae(vae_copy)


def test_a_file_the_manifest_does_not_list_is_refused(vae_copy):
    (vae_copy.parent / MANIFEST_NAME).write_text("{}")
    with pytest.raises(WeightsError, match="is not listed"):
        load_weights(vae_copy)


def test_a_garbage_manifest_is_set_aside_and_read_as_empty(vae_copy):
    manifest = vae_copy.parent / MANIFEST_NAME
    manifest.write_text('{"torn": ')
    assert read_manifest(vae_copy.parent) == {}
    assert (vae_copy.parent / (MANIFEST_NAME + ".damaged")).read_text() == '{"torn": '
    with pytest.raises(WeightsError, match="is not listed"):
        load_weights(vae_copy)


def test_saving_after_a_garbage_manifest_starts_a_fresh_one(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("not json at all")
    entry = save_weights(tmp_path / "w.safetensors", {"a": torch.arange(4.0)}, {"steps": 1})
    assert read_manifest(tmp_path)["w.safetensors"]["sha256"] == entry["sha256"]
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["a"], torch.arange(4.0))


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_atomically(target, object())  # fails while writing the temporary file
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
    write_atomically(target, b"new")
    assert target.read_text() == "new"


def test_an_entry_is_read_afresh_when_the_manifest_is_written_again_and_is_a_copy(tmp_path):
    """Operators state an entry's figures on every frame from a parse kept per manifest version:
    a rewrite must show, and changing what was handed out must change nothing kept."""
    assert read_entry("a.safetensors", tmp_path) == {}  # no manifest yet
    update_manifest(tmp_path / MANIFEST_NAME, "a.safetensors", {"test_accuracy": 0.5, "metric": {"value": 1}})
    entry = read_entry("a.safetensors", tmp_path)
    assert entry == {"test_accuracy": 0.5, "metric": {"value": 1}}
    entry["metric"]["value"] = 2
    assert read_entry("a.safetensors", tmp_path)["metric"]["value"] == 1
    update_manifest(tmp_path / MANIFEST_NAME, "a.safetensors", {"test_accuracy": 0.9})
    assert read_entry("a.safetensors", tmp_path) == {"test_accuracy": 0.9} == read_manifest(tmp_path)["a.safetensors"]
    assert read_entry("b.safetensors", tmp_path) == {}
