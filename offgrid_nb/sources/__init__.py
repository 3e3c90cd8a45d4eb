"""Where models live on this machine: one small module per place, each a :class:`ModelSource`.

=============  ====================================================================
``offgrid``    our models folder (:mod:`.offgrid`): the only one we write to
``hf-cache``   the Hugging Face cache (:mod:`.hf_cache`)
``lmstudio``   LM Studio's models folders (:mod:`.lmstudio`)
``ollama``     Ollama's blob store (:mod:`.ollama`)
``llama.cpp``  llama.cpp's download cache (:mod:`.llama_cpp`)
``folder``     the folders in ``OFFGRID_MODEL_DIRS`` (:mod:`.folders`)
=============  ====================================================================

Which are on and where each looks come from :mod:`offgrid_nb.config`; the library
(:mod:`offgrid_nb.library`) merges what they yield.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from .base import OFFGRID, LocalModel, ModelSource, model_name
from .folders import ExtraFolders
from .hf_cache import HFCache
from .llama_cpp import LlamaCppCache
from .lmstudio import LMStudioFolders
from .offgrid import OffgridFolder
from .ollama import OllamaStore


def enabled_sources(settings: Settings, models_dir: Path) -> list[ModelSource]:
    """The sources the settings turn on, in :data:`offgrid_nb.config.SOURCE_IDS` order.

    Args:
        settings: the resolved settings (which sources, and their folders).
        models_dir: our own models folder (always on when ``offgrid`` is).
    """
    every: list[ModelSource] = [OffgridFolder(models_dir)]
    if settings.hf_cache_dir is not None:
        every.append(HFCache(settings.hf_cache_dir))
    every.append(LMStudioFolders(settings.lmstudio_dirs))
    if settings.ollama_dir is not None:
        every.append(OllamaStore(settings.ollama_dir))
    if settings.llama_cache_dir is not None:
        every.append(LlamaCppCache(settings.llama_cache_dir))
    every.append(ExtraFolders(settings.model_dirs))
    return [source for source in every if source.id in settings.sources]


__all__ = ["OFFGRID", "LocalModel", "ModelSource", "enabled_sources", "model_name"]
