"""Ollama's blob store (``ollama``): ``~/.ollama/models`` or ``OLLAMA_MODELS``.

A manifest at ``manifests/<host>/<namespace>/<model>/<tag>`` (JSON, as a container registry
writes it) lists layers; the one whose mediaType is :data:`MODEL_MEDIA_TYPE` names the GGUF,
stored as ``blobs/sha256-<hex>``; the config layer's JSON gives its quantization and size.
Models are named as Ollama names them: ``llama3.2:1b`` (``registry.ollama.ai/library/``
dropped), ``user/model:tag``, ``hf.co/owner/repo:Q4_K_M``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jsonfile import read_json
from .base import LocalModel, glob_files

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
HUB_HOSTS = ("hf.co", "huggingface.co")  # `ollama pull hf.co/owner/repo:QUANT`


def ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    """The name Ollama shows for a manifest's path parts."""
    if host != DEFAULT_REGISTRY:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}:{tag}"


def _layer(manifest: dict[str, Any], media_type: str) -> str | None:
    """The digest of the first layer of ``media_type``, if any."""
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else ():
        if isinstance(layer, dict) and layer.get("mediaType") == media_type:
            digest = layer.get("digest")
            return digest if isinstance(digest, str) else None
    return None


@dataclass(frozen=True)
class OllamaStore:
    """Ollama's models folder (manifests and blobs)."""

    root: Path
    id: str = "ollama"

    def _blob(self, digest: str | None) -> Path | None:
        """The blob file of ``sha256:<hex>``; ``None`` for a malformed digest."""
        if digest is None or not digest.startswith("sha256:") or "/" in digest:
            return None
        return self.root / "blobs" / digest.replace(":", "-", 1)

    def _config(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The config layer's text fields (``file_type``, ``model_type``...); ``{}`` if none."""
        config = manifest.get("config")
        digest = config.get("digest") if isinstance(config, dict) else None
        blob = self._blob(digest if isinstance(digest, str) else None)
        data = read_json(blob) if blob is not None else None  # small; cached by version
        items = data.items() if isinstance(data, dict) else ()
        return {k: v for k, v in items if isinstance(v, str) and v}

    def models(self) -> Iterator[LocalModel]:
        """Every model whose manifest and GGUF blob are present (see
        :class:`~.base.ModelSource`); a broken manifest is skipped."""
        manifests = self.root / "manifests"
        for path in glob_files(manifests, "*/*/*/*"):
            manifest = read_json(path)  # cached until the file changes
            if not isinstance(manifest, dict):
                continue
            blob = self._blob(_layer(manifest, MODEL_MEDIA_TYPE))
            if blob is None or not blob.is_file():
                continue
            host, namespace, model, tag = path.relative_to(manifests).parts
            name = ollama_name(host, namespace, model, tag)
            config = self._config(manifest)
            from_hub = host in HUB_HOSTS
            yield LocalModel(
                name,
                (blob,),
                None,
                self.id,
                name,
                repo_id=f"{namespace}/{model}" if from_hub else None,
                quant=config.get("file_type") or (tag if from_hub else None),
                param_size=config.get("model_type"),
            )

    def removal_hint(self, model: LocalModel) -> str:
        """Ollama owns its store."""
        return f"delete it with: ollama rm {model.key}"
