"""The Hugging Face cache (``hf-cache``): what ``hf download`` and ``hf_hub_download`` fetched,
read with ``huggingface_hub.scan_cache_dir`` in ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``).
Files are used through their snapshot paths, which keep the repo's file names."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CachedRepoInfo, scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from .base import LocalModel, file_model, group_models


def _snapshot_files(repo: CachedRepoInfo) -> dict[str, Path]:
    """Path in the repo -> snapshot file, newest revision first for a path in several."""
    files: dict[str, Path] = {}
    for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
        for file in revision.files:
            relative = file.file_path.relative_to(revision.snapshot_path).as_posix()
            files.setdefault(relative, file.file_path)
    return files


@dataclass(frozen=True)
class HFCache:
    """A Hugging Face hub cache folder."""

    root: Path
    id: str = "hf-cache"

    def models(self) -> Iterator[LocalModel]:
        """Every complete GGUF model in the cache's model repos (see
        :class:`~.base.ModelSource`); the cache's own warnings (a broken repo) are skipped."""
        try:
            cache = scan_cache_dir(self.root)
        except (CacheNotFound, OSError, ValueError):
            return
        for repo in sorted(cache.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            files = _snapshot_files(repo)
            in_repo = {path: relative for relative, path in files.items()}
            gguf = [path for relative, path in files.items() if relative.endswith(".gguf")]
            for name, shards in group_models(gguf):
                key = f"{repo.repo_id}/{in_repo[shards[0]]}"
                yield file_model(self.id, self.root, name, shards, key=key, repo_id=repo.repo_id)

    def removal_hint(self, model: LocalModel) -> str:
        """The cache belongs to huggingface_hub's tools."""
        return (
            f"delete it with: hf cache rm model/{model.repo_id} "
            "(older clients: huggingface-cli delete-cache)"
        )
