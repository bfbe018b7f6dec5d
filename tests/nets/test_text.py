"""Released embeddings, CLIP text encoding (with a small randomly initialised CLIP) and its cache."""

from __future__ import annotations

import shutil

import pytest
import torch

import universal
from universal import Catalog, WeightsUnavailableError
from universal.io.download import cache_dir
from universal.nets import text as text_module
from universal.nets.text import TextEncoder, catalog_embeddings, load_released_embeddings


def test_released_embedding_file(reference):
    embeddings = load_released_embeddings(reference / "txt_encoding.pth")
    raw = torch.load(reference / "txt_encoding.pth", map_location="cpu", weights_only=True)
    assert raw.dtype == torch.float16 and embeddings.dtype == torch.float32
    assert embeddings.shape == (32, 512)
    assert torch.equal(embeddings, raw.float())


def test_catalog_embeddings_are_the_released_rows(reference, monkeypatch):
    monkeypatch.setenv("UNIVERSAL_TEXT_EMBEDDINGS", str(reference / "txt_encoding.pth"))
    released = load_released_embeddings()
    assert torch.equal(catalog_embeddings(Catalog.default()), released)
    subset = Catalog.default().add("Appendix")
    encoder = _FixedEncoder()
    rows = catalog_embeddings(subset, encoder=encoder)
    assert torch.equal(rows[:32], released) and torch.equal(rows[32], encoder.value)
    assert encoder.prompts == ["A computerized tomography of a Appendix"]


def test_released_embeddings_missing_offline_names_the_fix(tmp_path):
    with pytest.raises(WeightsUnavailableError) as raised:
        load_released_embeddings()
    message = str(raised.value)
    assert "txt_encoding.pth" in message and "UNIVERSAL_TEXT_EMBEDDINGS" in message and "downloads are off" in message


def test_clip_weights_missing_offline_names_the_fix():
    with pytest.raises(WeightsUnavailableError) as raised:
        TextEncoder().encode(["A computerized tomography of a Appendix"])
    message = str(raised.value)
    assert "ViT-B-32.pt" in message and "UNIVERSAL_CLIP_WEIGHTS" in message
    assert "openaipublic.azureedge.net" in message


def test_explicit_weights_path_must_exist(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"given file .*absent\.pt does not exist"):
        TextEncoder(tmp_path / "absent.pt").encode(["x"])


def test_clip_encoding_shape_determinism_and_cache(random_clip_weights, tmp_path, monkeypatch):
    prompts = ["A computerized tomography of a Appendix", "A computerized tomography of a Thyroid"]
    encoder = TextEncoder(random_clip_weights, cache=tmp_path / "cache")
    first = encoder.encode(prompts)
    assert first.shape == (2, 512) and first.dtype == torch.float32
    assert not torch.allclose(first[0], first[1])
    assert torch.equal(encoder.encode(prompts[::-1]), first.flip(0))
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2

    def no_network(*args):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(text_module, "_load_clip", no_network)
    cached = TextEncoder(random_clip_weights, cache=tmp_path / "cache").encode(prompts)
    assert torch.equal(cached, first)


def test_clip_weights_from_environment_and_cache_folder(random_clip_weights, monkeypatch):
    monkeypatch.setenv("UNIVERSAL_CLIP_WEIGHTS", str(random_clip_weights))
    from_env = TextEncoder().encode(["A computerized tomography of a Appendix"])
    monkeypatch.delenv("UNIVERSAL_CLIP_WEIGHTS")
    cached = cache_dir() / text_module.CLIP_WEIGHTS.filename
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(random_clip_weights, cached)
    assert TextEncoder().weights_path == cached
    assert torch.equal(TextEncoder().encode(["A computerized tomography of a Appendix"]), from_env)


def test_cache_is_keyed_by_weights(random_clip_weights, tmp_path):
    prompt = ["A computerized tomography of a Appendix"]
    other = tmp_path / "other.pt"
    state = torch.load(random_clip_weights, weights_only=True)
    state["text_projection"] = state["text_projection"] * 2
    torch.save(state, other)
    cache = tmp_path / "cache"
    TextEncoder(random_clip_weights, cache=cache).encode(prompt)
    assert len(list(cache.rglob("*.pt"))) == 1
    # other weights find nothing under their own key, so they would compute their own embedding
    second = TextEncoder(other, cache=cache)
    assert second.weights_sha256 != TextEncoder(random_clip_weights).weights_sha256
    assert second._read_cache(prompt[0]) is None


def test_add_class_uses_the_text_encoder(random_clip_weights, tmp_path):
    model = universal.UniversalModel("unet", width=8)
    encoder = TextEncoder(random_clip_weights, cache=tmp_path)
    info = model.add_class("Appendix", text_encoder=encoder)
    assert torch.equal(model.class_embeddings[32], encoder.encode([info.prompt])[0])


class _FixedEncoder:
    def __init__(self):
        self.value = torch.arange(512, dtype=torch.float32)
        self.prompts: list[str] = []

    def encode(self, prompts):
        self.prompts.extend(prompts)
        return self.value.expand(len(prompts), 512)
