"""llama.cpp's download cache (``llama.cpp``): what ``llama-cli -hf owner/repo`` fetched, in
``LLAMA_CACHE`` (default ``~/.cache/llama.cpp``), flat: ``<owner>_<repo>_<file>.gguf`` beside
``manifest=<owner>=<repo>=<tag>.json`` (the Hub's manifest: ``ggufFile.rfilename``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..jsonfile import read_json
from .base import LocalModel, file_model, glob_files, group_models, model_name


@dataclass(frozen=True)
class LlamaCppCache:
    """llama.cpp's cache folder."""

    root: Path
    id: str = "llama.cpp"

    def _repos(self) -> dict[str, str]:
        """Cached file name -> Hub repo, from the manifests llama.cpp keeps."""
        repos = {}
        for path in glob_files(self.root, "manifest=*.json"):
            parts = path.name.removesuffix(".json").split("=")
            data = read_json(path)
            if len(parts) != 4 or not isinstance(data, dict):
                continue  # not one of llama.cpp's manifests, or a broken one
            owner, repo = parts[1], parts[2]
            for entry in (data.get("ggufFile"), data.get("mmprojFile")):
                if isinstance(entry, dict) and isinstance(entry.get("rfilename"), str):
                    flat = entry["rfilename"].replace("/", "_")
                    repos[f"{owner}_{repo}_{flat}"] = f"{owner}/{repo}"
        return repos

    def models(self) -> Iterator[LocalModel]:
        """Every complete model in the cache (see :class:`~.base.ModelSource`)."""
        repos = self._repos()
        for name, files in group_models(glob_files(self.root)):
            repo_id = repos.get(files[0].name)
            if repo_id is None:
                yield file_model(self.id, self.root, name, files)
                continue
            prefix = repo_id.replace("/", "_") + "_"
            short = model_name(Path(files[0].name.removeprefix(prefix)))
            yield file_model(self.id, self.root, short, files, repo_id=repo_id)

    def removal_hint(self, model: LocalModel) -> str:
        """llama.cpp has no command for it: the user deletes the file."""
        return f"it is in llama.cpp's cache: delete {model.path} (and its .json) yourself"
