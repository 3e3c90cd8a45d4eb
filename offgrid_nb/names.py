"""Parse GGUF file names as they are found on the Hugging Face Hub.

Covers the naming styles of the big uploaders (TheBloke, bartowski, unsloth, Qwen,
lmstudio-community, MaziyarPanahi, ggml-org): the quant type, the parameter count, the
``-00001-of-00003`` split suffix, and a few yes/no questions (is this a weight file, does the
name say chat/instruct).

Nothing is guessed: when a name does not say something, the answer is ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Quant types, in the order we prefer them when picking the "best" variant of a repo for a
# typical machine (8-32 GB of RAM). The order is about quality per GB, not quality alone:
#   * Q4_K_M is the usual sweet spot: close to full quality at about a quarter of F16's size.
#   * Q5_K_M / Q4_K_S / Q5_K_S / Q6_K trade a bit more size for a bit more quality (or the
#     reverse); the larger-embedding "_L" (bartowski) and dynamic "_XL" (unsloth) variants sit
#     next to the K-quant they are built on.
#   * Then the other 4-bit formats (legacy Q4_0/Q4_1, i-quants, ARM repacks, MXFP4) and the
#     legacy 5-bit ones, then Q8_0, which is near lossless but twice the size of a 4-bit file.
#   * Below 4 bits quality drops quickly, so 3-bit, then 2-bit, then 1-bit/ternary come late.
#   * Full precision (F16/BF16/F32) comes last: no better in practice than Q8_0, and 2-4x the
#     size, so it is only the pick when nothing else is there.
# The unsloth "UD-" prefix does not change the rank ("UD-Q4_K_XL" ranks as "Q4_K_XL").
QUANT_PREFERENCE: tuple[str, ...] = (
    "Q4_K_M",
    "Q4_K",  # llama.cpp alias of Q4_K_M
    "Q4_K_XL",
    "Q4_K_L",
    "Q5_K_M",
    "Q5_K",  # llama.cpp alias of Q5_K_M
    "Q5_K_XL",
    "Q5_K_L",
    "Q4_K_S",
    "Q5_K_S",
    "Q6_K",
    "Q6_K_XL",
    "Q6_K_L",
    "Q4_0",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q4_0_4_4",
    "Q4_0_4_8",
    "Q4_0_8_8",
    "MXFP4",
    "MXFP4_MOE",
    "Q8_0",
    "Q8_K_XL",
    "Q3_K_L",
    "Q3_K_XL",
    "Q3_K_M",
    "Q3_K",  # llama.cpp alias of Q3_K_M
    "IQ3_M",
    "IQ3_S",
    "Q3_K_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K_XL",
    "Q2_K_L",
    "Q2_K",
    "IQ2_M",
    "Q2_K_S",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "TQ2_0",
    "TQ1_0",
    "F16",
    "BF16",
    "F32",
)

#: Every canonical quant name :func:`parse_quant` can return, without the ``UD-`` prefix: the
#: llama.cpp file types plus the community ``_L``/``_XL`` suffix forms.
QUANT_TYPES: frozenset[str] = frozenset(QUANT_PREFERENCE)

_UNKNOWN_RANK = 1_000
_UD_PREFIX = "UD-"
_ALIASES = {"FP16": "F16", "FP32": "F32"}
_SEP = "[-_.]"


def _quant_alternation() -> str:
    names = sorted(QUANT_TYPES | _ALIASES.keys(), key=len, reverse=True)
    # Longest first, so "Q4_0_4_4" wins over "Q4_0" and "Q4_K_M" over "Q4_K".
    return "|".join(_SEP.join(re.escape(part) for part in n.split("_")) for n in names)


# A quant token is not glued to a word on either side, and is not cut short inside a longer
# underscore token (so "Q4_K_Mx" is not read as "Q4_K").
_QUANT_START = r"(?<![A-Za-z0-9])"
_QUANT_END = r"(?![A-Za-z0-9]|_[A-Za-z0-9])"
_QUANT_RE = re.compile(
    rf"{_QUANT_START}(?P<ud>UD{_SEP})?(?P<q>{_quant_alternation()}){_QUANT_END}",
    re.IGNORECASE,
)

_NUM = r"\d+(?:\.\d+)?"
_PARAM_BODY = (
    rf"(?:(?P<experts>\d+)x)?(?P<num>{_NUM})(?P<unit>[BM])"
    rf"(?:{_SEP}A(?P<active>{_NUM})(?P<active_unit>[BM]))?"
)
_PARAM_RE = re.compile(rf"(?<![A-Za-z0-9.]){_PARAM_BODY}(?![A-Za-z0-9])", re.IGNORECASE)
_PARAM_FULL_RE = re.compile(_PARAM_BODY, re.IGNORECASE)

_SHARD_RE = re.compile(r"-(?P<index>\d+)-of-(?P<total>\d+)(?P<ext>\.gguf)?$", re.IGNORECASE)

_IT_RE = re.compile(r"(?<![a-z0-9])it(?![a-z0-9])")
_CHAT_RE = re.compile(r"chat|instruct(?!or)|assistant|conversational")


@dataclass(frozen=True)
class ParsedName:
    """What a GGUF file name says about itself.

    Attributes:
        filename: the name as given, possibly with subfolders.
        quant: canonical quant type (``"Q4_K_M"``, ``"UD-Q4_K_XL"``, ``"F16"``) or ``None``.
        param_size: canonical parameter count (``"7B"``, ``"8x7B"``, ``"30B-A3B"``) or ``None``.
        shard: ``(index, total)`` for split files, ``None`` when not split.
        variant: key shared by all shards of one variant (``filename`` without the shard suffix).
    """

    filename: str
    quant: str | None
    param_size: str | None
    shard: tuple[int, int] | None
    variant: str


def _components(name: str) -> list[str]:
    """Path components, last (the file name) first."""
    return [part for part in reversed(name.split("/")) if part]


def _canonical_quant(match: re.Match[str]) -> str:
    quant = re.sub(r"[-.]", "_", match.group("q").upper())
    quant = _ALIASES.get(quant, quant)
    return _UD_PREFIX + quant if match.group("ud") else quant


def parse_quant(name: str) -> str | None:
    """Find the quant type in a file name.

    The last quant token of the file name wins; when the file name has none, its folders are
    searched (innermost first), so ``"Q4_K_M/Model-00001-of-00002.gguf"`` gives ``"Q4_K_M"``.

    Args:
        name: a file name or Hub path, in any case, with ``.``/``-``/``_`` separators.

    Returns:
        The canonical upper-case quant (``"FP16"`` becomes ``"F16"``; unsloth dynamic quants keep
        their ``"UD-"`` prefix), or ``None`` when the name does not say.
    """
    for part in _components(name):
        matches = list(_QUANT_RE.finditer(part))
        if matches:
            return _canonical_quant(matches[-1])
    return None


def _canonical_param(match: re.Match[str]) -> str:
    experts = f"{match.group('experts')}x" if match.group("experts") else ""
    size = f"{experts}{match.group('num')}{match.group('unit').upper()}"
    if match.group("active"):
        size += f"-A{match.group('active')}{match.group('active_unit').upper()}"
    return size


def parse_param_size(name: str) -> str | None:
    """Find the parameter count in a file name or repo id.

    A size in billions is preferred over one in millions (so the ``1M`` context length of
    ``"Qwen2.5-14B-Instruct-1M"`` is not taken for the size); otherwise the first one wins. The
    file name is searched before its folders.

    Args:
        name: e.g. ``"mixtral-8x7b-instruct-v0.1.Q5_K_M.gguf"`` or ``"Qwen/Qwen3-30B-A3B"``.

    Returns:
        The canonical size (``"7B"``, ``"0.5B"``, ``"135M"``, ``"8x7B"``, ``"30B-A3B"``), or
        ``None`` when the name does not say.
    """
    for part in _components(name):
        matches = list(_PARAM_RE.finditer(part))
        if matches:
            billions = [m for m in matches if m.group("unit").upper() == "B"]
            return _canonical_param((billions or matches)[0])
    return None


def parse_shard(name: str) -> tuple[int, int] | None:
    """Read the ``-00001-of-00003`` split suffix written by ``llama-gguf-split``.

    Args:
        name: a file name (with or without the ``.gguf`` extension).

    Returns:
        ``(index, total)`` with 1-based ``index``, or ``None`` when the file is not split (or the
        numbers make no sense, like ``0`` or an index above the total).
    """
    match = _SHARD_RE.search(name)
    if match is None:
        return None
    index, total = int(match.group("index")), int(match.group("total"))
    if not 1 <= index <= total:
        return None
    return index, total


def parse_filename(filename: str) -> ParsedName:
    """Parse everything a GGUF file name says.

    Args:
        filename: the name as listed in the repo, possibly with subfolders.

    Returns:
        A :class:`ParsedName`; fields the name does not give are ``None``.
    """
    shard = parse_shard(filename)
    variant = filename
    if shard is not None:
        variant = _SHARD_RE.sub(lambda m: m.group("ext") or "", filename)
    return ParsedName(
        filename=filename,
        quant=parse_quant(filename),
        param_size=parse_param_size(filename),
        shard=shard,
        variant=variant,
    )


def is_model_file(filename: str) -> bool:
    """Whether a repo file is GGUF model weights.

    Args:
        filename: a path in the repo.

    Returns:
        ``True`` for ``.gguf`` files, except importance matrices (``*imatrix*``) and
        multimodal projectors (``*mmproj*``). Everything else (README, ``imatrix.dat``, legacy
        ``.gguf-split-a`` parts) is ``False``.
    """
    base = filename.rsplit("/", 1)[-1].lower()
    if not base.endswith(".gguf"):
        return False
    return "imatrix" not in base and "mmproj" not in base


def is_chat_name(name: str) -> bool:
    """Whether a model or file name clearly says it is tuned for chat.

    Only clear signals count: ``chat``, ``instruct``, ``assistant``, ``conversational``, or
    ``it`` as a word (``gemma-2-9b-it``). Base models and names with no such word are ``False``.

    Args:
        name: a file name or repo id.

    Returns:
        ``True`` when one of the signals is present.
    """
    lowered = name.lower()
    return bool(_CHAT_RE.search(lowered) or _IT_RE.search(lowered))


def _normalize_quant(quant: str) -> str | None:
    """Canonical form of a quant name given on its own (``"q4_k_m"`` -> ``"Q4_K_M"``)."""
    match = _QUANT_RE.fullmatch(quant.strip())
    return _canonical_quant(match) if match else None


def quant_rank(quant: str | None) -> int:
    """Position of a quant in :data:`QUANT_PREFERENCE`; lower is preferred.

    Args:
        quant: a quant name in any case; ``"UD-X"`` ranks as ``"X"``.

    Returns:
        The index in :data:`QUANT_PREFERENCE`, or a number larger than any index for ``None`` and
        unknown names.
    """
    if quant is None:
        return _UNKNOWN_RANK
    canonical = _normalize_quant(quant)
    if canonical is None:
        return _UNKNOWN_RANK
    return QUANT_PREFERENCE.index(canonical.removeprefix(_UD_PREFIX))


def quant_matches(actual: str | None, wanted: str) -> bool:
    """Whether a file's quant is the one a user asked for.

    Case and separators do not matter, and a plain name also matches its unsloth dynamic
    variant (``"Q4_K_XL"`` matches ``"UD-Q4_K_XL"``); asking for ``"UD-..."`` needs the prefix.

    Args:
        actual: the parsed quant of a file (``None`` never matches).
        wanted: what the user typed, e.g. ``"q4_k_m"``.

    Returns:
        ``True`` when they name the same quant.
    """
    if actual is None:
        return False
    have = _normalize_quant(actual) or actual.strip().upper()
    want = _normalize_quant(wanted) or wanted.strip().upper()
    if not want:
        return False
    return have == want or have == _UD_PREFIX + want


def param_billions(param_size: str | None) -> float | None:
    """Total parameters in billions.

    Args:
        param_size: a size as returned by :func:`parse_param_size` (any case).

    Returns:
        ``"7B"`` -> ``7.0``, ``"135M"`` -> ``0.135``, ``"8x7B"`` -> ``56.0`` and
        ``"30B-A3B"`` -> ``30.0`` (total, not active); ``None`` when not given or not a size.
    """
    if param_size is None:
        return None
    match = _PARAM_FULL_RE.fullmatch(param_size.strip())
    if match is None:
        return None
    exponent = "" if match.group("unit").upper() == "B" else "e-3"
    value = float(match.group("num") + exponent)
    if match.group("experts"):
        value *= int(match.group("experts"))
    return value
