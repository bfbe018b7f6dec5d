"""Text prompts → 512-d CLIP ViT-B/32 text embeddings, and the released embedding file.

The released model names its 32 classes with the embeddings in ``txt_encoding.pth`` (OpenAI CLIP
ViT-B/32 ``encode_text`` of "A computerized tomography of a {name}", not normalised). A new class
gets its embedding from the same CLIP model through open_clip; embeddings are cached on disk, keyed
by model, weights and prompt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import atomic_open, sha256_of
from universal.io.download import RELEASE_LICENCE, RemoteFile, cache_dir, resolve

CLIP_MODEL = "ViT-B-32"
EMBEDDING_DIM = 512  # the size of a CLIP ViT-B/32 text embedding, and of a class embedding

# OpenAI's file, as listed in openai/CLIP clip/clip.py (_MODELS["ViT-B/32"]) and mlfoundations/open_clip
# src/open_clip/pretrained.py (ViT-B-32 "openai"); the folder in its URL is the file's SHA-256, which
# both verify downloads against.
_CLIP_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
CLIP_WEIGHTS = RemoteFile(
    description="CLIP ViT-B/32 weights (OpenAI)",
    url=f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA256}/ViT-B-32.pt",
    filename="clip/ViT-B-32.pt",
    sha256=_CLIP_SHA256,
    env="UNIVERSAL_CLIP_WEIGHTS",
    licence="MIT (OpenAI CLIP)",
)

# ljwztc/CLIP-Driven-Universal-Model pretrained_weights/txt_encoding.pth on its main branch (a plain git
# file, so GitHub publishes no digest); pinned to that file's SHA-256.
RELEASED_EMBEDDINGS = RemoteFile(
    description="released class embeddings (txt_encoding.pth, 32×512)",
    url="https://github.com/ljwztc/CLIP-Driven-Universal-Model/raw/main/pretrained_weights/txt_encoding.pth",
    filename="txt_encoding.pth",
    sha256="9de46b0be0fdfedc82852045d15efdbb3a04e48a954df27d1290af2f63997145",
    env="UNIVERSAL_TEXT_EMBEDDINGS",
    licence=RELEASE_LICENCE,
)


def load_released_embeddings(path: str | Path | None = None) -> torch.Tensor:
    """(32, 512) float32 embeddings of the released classes, in catalogue order.

    The file is a bare float16 tensor saved from a CUDA device; it is read onto the CPU.
    """
    path = resolve(RELEASED_EMBEDDINGS, path)
    try:
        embeddings = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UniversalError(f"cannot read class embeddings from {path}: {error}") from error
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[1] != EMBEDDING_DIM:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise UniversalError(f"{path} must hold a (N, {EMBEDDING_DIM}) tensor of class embeddings, not {shape}")
    return embeddings.float()


def read_embedding(path: str | Path) -> torch.Tensor:
    """A class embedding (:data:`EMBEDDING_DIM` values) from a .npy file or a torch file holding one tensor."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path)).float()
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UniversalError(f"cannot read embedding {path}: {error}") from error
    if not isinstance(value, torch.Tensor) or value.numel() != EMBEDDING_DIM:
        raise UniversalError(f"{path} must hold one embedding of {EMBEDDING_DIM} values")
    return value.float()


class TextEncoder:
    """Prompt → (512,) CLIP ViT-B/32 text embedding, with an on-disk cache.

    Args:
        weights: the CLIP weights file (OpenAI's ``ViT-B-32.pt`` or an open_clip state dict); by
            default ``$UNIVERSAL_CLIP_WEIGHTS``, then ``<cache>/clip/ViT-B-32.pt``, then a download.
        cache: folder of cached embeddings (default ``<cache>/text-embeddings``).

    The network is only loaded when a prompt is not in the cache.
    """

    def __init__(self, weights: str | Path | None = None, cache: str | Path | None = None):
        self._weights_arg = weights
        self._weights_path: Path | None = None
        self._weights_sha: str | None = None
        self._cache = Path(cache) if cache else cache_dir() / "text-embeddings"
        self._model = None
        self._tokenizer = None

    @property
    def weights_path(self) -> Path:
        if self._weights_path is None:
            self._weights_path = resolve(CLIP_WEIGHTS, self._weights_arg)
        return self._weights_path

    @property
    def weights_sha256(self) -> str:
        if self._weights_sha is None:
            self._weights_sha = sha256_of(self.weights_path)
        return self._weights_sha

    def _cache_file(self, prompt: str) -> Path:
        key = hashlib.sha256(prompt.encode()).hexdigest()[:32]
        return self._cache / f"{CLIP_MODEL}-{self.weights_sha256[:16]}" / f"{key}.pt"

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(N, 512) float32 embeddings of ``prompts`` (unnormalised ``encode_text`` output)."""
        found: dict[str, torch.Tensor] = {}
        for prompt in dict.fromkeys(prompts):
            cached = self._read_cache(prompt)
            if cached is not None:
                found[prompt] = cached
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            for prompt, embedding in zip(missing, self._compute(missing), strict=True):
                found[prompt] = embedding
                with atomic_open(self._cache_file(prompt)) as stream:
                    torch.save({"prompt": prompt, "embedding": embedding.clone()}, stream)
        return torch.stack([found[p] for p in prompts])

    def _read_cache(self, prompt: str) -> torch.Tensor | None:
        path = self._cache_file(prompt)
        if not path.is_file():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache entry is recomputed
            return None
        return record["embedding"] if record.get("prompt") == prompt else None

    @torch.no_grad()
    def _compute(self, prompts: list[str]) -> torch.Tensor:
        if self._model is None:
            self._model, self._tokenizer = _load_clip(self.weights_path, self.weights_sha256)
        return self._model.encode_text(self._tokenizer(prompts)).float()


_LOADED_CLIP: dict[str, tuple] = {}  # weights SHA-256 -> (model, tokenizer), one at a time (~600 MB)


def _load_clip(path: Path, sha256: str):
    """An fp32 CPU CLIP model and its tokenizer from an OpenAI archive or an open_clip state dict.

    Kept for the process's life, keyed by the weights' digest: adding several classes loads CLIP once,
    and a copy of the same file elsewhere is not loaded again.
    """
    if sha256 not in _LOADED_CLIP:
        _LOADED_CLIP.clear()
        _LOADED_CLIP[sha256] = _read_clip(path)
    return _LOADED_CLIP[sha256]


def _read_clip(path: Path):
    try:
        import open_clip
    except ImportError as error:
        raise UniversalError("text prompts need open_clip: pip install open_clip_torch") from error
    try:
        model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    except Exception as error:
        raise UniversalError(
            f"cannot load CLIP {CLIP_MODEL} weights from {path}: {error}. Provide OpenAI's ViT-B-32.pt "
            f"({CLIP_WEIGHTS.url})"
        ) from error
    return model.eval(), open_clip.get_tokenizer(CLIP_MODEL)


def catalog_embeddings(
    catalog: Catalog,
    *,
    released: torch.Tensor | None = None,
    encoder: TextEncoder | None = None,
) -> torch.Tensor:
    """(K, 512) embeddings for a catalogue: released rows for the released prompts, CLIP for others.

    ``released`` defaults to :func:`load_released_embeddings`; CLIP is only loaded for new prompts.
    """
    released_rows = {info.prompt: info.id - 1 for info in Catalog.default()}
    new_prompts = [info.prompt for info in catalog if info.prompt not in released_rows]
    new = dict(zip(new_prompts, (encoder or TextEncoder()).encode(new_prompts), strict=True)) if new_prompts else {}
    if len(new) < len(catalog) and released is None:
        released = load_released_embeddings()
    return torch.stack([new[info.prompt] if info.prompt in new else released[released_rows[info.prompt]]
                        for info in catalog])
