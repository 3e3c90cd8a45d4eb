"""Tests for offgrid_nb.names: GGUF file-name parsing."""

from __future__ import annotations

import dataclasses

import pytest

from offgrid_nb.names import (
    QUANT_PREFERENCE,
    QUANT_TYPES,
    ParsedName,
    is_chat_name,
    is_model_file,
    param_billions,
    parse_filename,
    parse_param_size,
    parse_quant,
    parse_shard,
    quant_matches,
    quant_rank,
)

# (file name as listed on the Hub, quant, param_size, shard, is_chat)
REAL_NAMES = [
    # TheBloke
    ("llama-2-7b-chat.Q4_K_M.gguf", "Q4_K_M", "7B", None, True),
    ("llama-2-13b-chat.Q5_K_S.gguf", "Q5_K_S", "13B", None, True),
    ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "Q4_K_M", "7B", None, True),
    ("mixtral-8x7b-instruct-v0.1.Q5_K_M.gguf", "Q5_K_M", "8x7B", None, True),
    ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "Q4_K_M", "1.1B", None, True),
    ("codellama-34b-instruct.Q3_K_L.gguf", "Q3_K_L", "34B", None, True),
    ("openhermes-2.5-mistral-7b.Q4_0.gguf", "Q4_0", "7B", None, False),
    ("zephyr-7b-beta.Q5_0.gguf", "Q5_0", "7B", None, False),
    ("phi-2.Q4_K_M.gguf", "Q4_K_M", None, None, False),
    ("llama-2-70b-chat.Q2_K.gguf", "Q2_K", "70B", None, True),
    ("Sheared-LLaMA-2.7B.Q6_K.gguf", "Q6_K", "2.7B", None, False),
    ("llama-2-70b-chat.Q8_0.gguf-split-a", "Q8_0", "70B", None, True),
    # bartowski (including the "_L"/"_XL" larger-embedding variants and ARM repacks)
    ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M", "8B", None, True),
    ("Meta-Llama-3.1-8B-Instruct-Q6_K_L.gguf", "Q6_K_L", "8B", None, True),
    ("Qwen2.5-7B-Instruct-Q4_K_L.gguf", "Q4_K_L", "7B", None, True),
    ("gemma-2-9b-it-Q3_K_XL.gguf", "Q3_K_XL", "9B", None, True),
    ("gemma-2-9b-it-IQ4_XS.gguf", "IQ4_XS", "9B", None, True),
    ("Llama-3.2-3B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4", "3B", None, True),
    ("Llama-3.2-3B-Instruct-Q4_0_8_8.gguf", "Q4_0_8_8", "3B", None, True),
    ("Llama-3.2-1B-Instruct-IQ4_NL.gguf", "IQ4_NL", "1B", None, True),
    ("Meta-Llama-3.1-8B-Instruct-f32.gguf", "F32", "8B", None, True),
    ("Mistral-Small-24B-Instruct-2501-IQ2_XXS.gguf", "IQ2_XXS", "24B", None, True),
    ("Qwen2.5-14B-Instruct-1M-IQ3_XS.gguf", "IQ3_XS", "14B", None, True),
    (
        "Meta-Llama-3.1-70B-Instruct-Q8_0/Meta-Llama-3.1-70B-Instruct-Q8_0-00002-of-00002.gguf",
        "Q8_0",
        "70B",
        (2, 2),
        True,
    ),
    ("DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf", "Q8_0", "1.5B", None, False),
    # unsloth (dynamic "UD-" quants, MoE sizes, folders per variant)
    ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL", "30B-A3B", None, False),
    ("Qwen3-30B-A3B-Q4_K_M.gguf", "Q4_K_M", "30B-A3B", None, False),
    (
        "UD-Q2_K_XL/Qwen3-235B-A22B-Instruct-2507-UD-Q2_K_XL-00001-of-00002.gguf",
        "UD-Q2_K_XL",
        "235B-A22B",
        (1, 2),
        True,
    ),
    (
        "DeepSeek-R1-UD-IQ1_S/DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
        "UD-IQ1_S",
        None,
        (1, 3),
        False,
    ),
    ("Llama-4-Scout-17B-16E-Instruct-UD-IQ2_XXS.gguf", "UD-IQ2_XXS", "17B", None, True),
    ("gemma-3-27b-it-UD-Q8_K_XL.gguf", "UD-Q8_K_XL", "27B", None, True),
    ("Qwen3-8B-UD-IQ1_M.gguf", "UD-IQ1_M", "8B", None, False),
    ("gemma-3-270m-it-Q8_0.gguf", "Q8_0", "270M", None, True),
    ("Q4_K_M/Kimi-K2-Instruct-00001-of-00013.gguf", "Q4_K_M", None, (1, 13), True),
    ("BF16/DeepSeek-V3-0324-BF16-00001-of-00030.gguf", "BF16", None, (1, 30), False),
    ("BF16/Model-BF16-00001-of-00003.gguf", "BF16", None, (1, 3), False),
    # Qwen (official repos: lower case, split files)
    ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M", "0.5B", None, True),
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M", "7B", (1, 2), True),
    ("Qwen2.5-7B-Instruct-Q4_K_M-00001-of-00002.gguf", "Q4_K_M", "7B", (1, 2), True),
    ("qwen2.5-coder-1.5b-instruct-fp16.gguf", "F16", "1.5B", None, True),
    ("qwen2-72b-instruct-q5_k_m-00002-of-00002.gguf", "Q5_K_M", "72B", (2, 2), True),
    ("Qwen3-0.6B-Q8_0.gguf", "Q8_0", "0.6B", None, False),
    # lmstudio-community
    ("Meta-Llama-3-8B-Instruct-Q8_0.gguf", "Q8_0", "8B", None, True),
    ("Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf", "Q4_K_M", "7B", None, True),
    ("gemma-2-2b-it-Q6_K.gguf", "Q6_K", "2B", None, True),
    # MaziyarPanahi
    ("Mistral-7B-Instruct-v0.3.Q4_K_S.gguf", "Q4_K_S", "7B", None, True),
    ("Llama-3.2-1B-Instruct.IQ3_M.gguf", "IQ3_M", "1B", None, True),
    ("Mixtral-8x22B-Instruct-v0.1.IQ3_XS-00001-of-00005.gguf", "IQ3_XS", "8x22B", (1, 5), True),
    ("Mistral-7B-Instruct-v0.3.fp16.gguf", "F16", "7B", None, True),
    # ggml-org and others
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4", "20B", None, False),
    ("gpt-oss-120b-mxfp4-00001-of-00003.gguf", "MXFP4", "120B", (1, 3), False),
    ("SmolLM2-135M-Instruct-Q8_0.gguf", "Q8_0", "135M", None, True),
    ("SmolLM2-360M-Instruct-Q4_K_M.gguf", "Q4_K_M", "360M", None, True),
    ("gemma-3-1b-it-Q4_K_M.gguf", "Q4_K_M", "1B", None, True),
    ("ggml-model-Q8_0.gguf", "Q8_0", None, None, False),
    ("ggml-model-f16.gguf", "F16", None, None, False),
    ("Phi-3-mini-4k-instruct-fp16.gguf", "F16", None, None, True),
    ("Phi-3-mini-4k-instruct-q4.gguf", None, None, None, True),
    ("bitnet_b1_58-3B-TQ1_0.gguf", "TQ1_0", "3B", None, False),
    ("bitnet_b1_58-large-TQ2_0.gguf", "TQ2_0", None, None, False),
    ("Falcon3-1B-Instruct-1.58bit-Q2_K_S.gguf", "Q2_K_S", "1B", None, True),
    ("Qwen-7B-Chat.Q4_1.gguf", "Q4_1", "7B", None, True),
    ("openchat-3.5-0106.Q5_1.gguf", "Q5_1", None, None, True),
    ("Hermes-3-Llama-3.1-8B.IQ2_M.gguf", "IQ2_M", "8B", None, False),
    ("granite-3.1-8b-instruct-IQ3_XXS.gguf", "IQ3_XXS", "8B", None, True),
    ("Qwen2.5-32B-Instruct-IQ2_S.gguf", "IQ2_S", "32B", None, True),
    ("Qwen2.5-32B-Instruct-IQ2_XS.gguf", "IQ2_XS", "32B", None, True),
    ("Llama-3.2-3B-Instruct-IQ3_S.gguf", "IQ3_S", "3B", None, True),
    ("Yi-1.5-9B-Chat-Q3_K_M.gguf", "Q3_K_M", "9B", None, True),
    ("Yi-1.5-9B-Chat-Q3_K_S.gguf", "Q3_K_S", "9B", None, True),
    ("model.gguf", None, None, None, False),
]


@pytest.mark.parametrize(("filename", "quant", "param_size", "shard", "is_chat"), REAL_NAMES)
def test_real_world_names(
    filename: str,
    quant: str | None,
    param_size: str | None,
    shard: tuple[int, int] | None,
    is_chat: bool,
) -> None:
    parsed = parse_filename(filename)
    assert parsed.filename == filename
    assert parsed.quant == quant
    assert parsed.param_size == param_size
    assert parsed.shard == shard
    assert is_chat_name(filename) is is_chat


def test_table_is_big_enough() -> None:
    assert len(REAL_NAMES) >= 45
    assert len({row[0] for row in REAL_NAMES}) == len(REAL_NAMES)


def test_parsed_name_is_frozen() -> None:
    parsed = parse_filename("gemma-2-9b-it-IQ4_XS.gguf")
    assert isinstance(parsed, ParsedName)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.quant = "Q8_0"  # type: ignore[misc]


# --- quant -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.q4_k_m.gguf", "Q4_K_M"),
        ("model-Q4_K_M.gguf", "Q4_K_M"),
        ("model_q4_k_m.gguf", "Q4_K_M"),
        ("model-q4-k-m.gguf", "Q4_K_M"),
        ("model.Q8.0.gguf", "Q8_0"),
        ("model-FP16.gguf", "F16"),
        ("model-fp32.gguf", "F32"),
        ("model-bf16.gguf", "BF16"),
        ("model-ud-iq2_xxs.gguf", "UD-IQ2_XXS"),
        ("model-ud_q4_k_xl.gguf", "UD-Q4_K_XL"),
        ("model-Q4_K.gguf", "Q4_K"),
        ("model-Q4_0_4_8.gguf", "Q4_0_4_8"),
        ("model-MXFP4_MOE.gguf", "MXFP4_MOE"),
        ("model-Q5_K_L.gguf", "Q5_K_L"),
        ("model-Q2_K_XL.gguf", "Q2_K_XL"),
        ("Q6_K", "Q6_K"),
        ("iq1_m", "IQ1_M"),
    ],
)
def test_parse_quant_forms(name: str, expected: str) -> None:
    assert parse_quant(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "Llama-3.1-8B-Instruct.gguf",  # version numbers and sizes are not quants
        "Qwen2.5-7B-Instruct.gguf",  # "Qwen2.5" is not a quant
        "mistral-7b-v0.1.gguf",
        "Phi-3-mini-128k-instruct.gguf",
        "TheBloke/Llama-2-7B-GGUF",
        "modelQ4_K_M.gguf",  # glued to a word: not a token
        "model-Q4_K_Mx.gguf",  # not cut short to "Q4_K"
        "model-Q8_0_Z.gguf",  # unknown suffix form: not cut short to "Q8_0"
        "model-Q4.gguf",  # incomplete: nothing guessed
        "model-Q9_0.gguf",
        "README.md",
        "",
    ],
)
def test_parse_quant_none(name: str) -> None:
    assert parse_quant(name) is None


def test_parse_quant_prefers_last_token_in_file_name() -> None:
    assert parse_quant("model-Q8_0-Q4_K_M.gguf") == "Q4_K_M"
    # the file name wins over the folder when both say something
    assert parse_quant("Q8_0/model-Q4_K_M.gguf") == "Q4_K_M"
    assert parse_quant("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf") == "Q4_K_M"


def test_parse_quant_falls_back_to_innermost_folder() -> None:
    assert parse_quant("Q4_K_M/Model-00001-of-00002.gguf") == "Q4_K_M"
    assert parse_quant("F16/IQ2_M/model.gguf") == "IQ2_M"


def test_parse_quant_longest_type_wins() -> None:
    assert parse_quant("m-Q4_0_4_4.gguf") == "Q4_0_4_4"
    assert parse_quant("m-IQ2_XXS.gguf") == "IQ2_XXS"
    assert parse_quant("m-Q3_K_XL.gguf") == "Q3_K_XL"
    assert parse_quant("m-Q3_K_L.gguf") == "Q3_K_L"


def test_every_quant_type_is_recognised_and_ranked() -> None:
    assert len(QUANT_PREFERENCE) == len(set(QUANT_PREFERENCE))
    assert set(QUANT_PREFERENCE) == QUANT_TYPES
    for quant in QUANT_TYPES:
        assert parse_quant(f"model-{quant}.gguf") == quant
        assert parse_quant(f"model.{quant.lower()}.gguf") == quant
        assert parse_quant(f"model-UD-{quant}.gguf") == f"UD-{quant}"


def test_quant_types_include_llama_cpp_types() -> None:
    llama_cpp = {
        "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
        "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8",
        "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S",
        "IQ3_M", "IQ4_XS", "IQ4_NL", "TQ1_0", "TQ2_0", "F16", "BF16", "F32", "MXFP4",
    }  # fmt: skip
    assert llama_cpp <= QUANT_TYPES
    assert "FP16" not in QUANT_TYPES  # an alias, canonical F16
    assert not any(q.startswith("UD-") for q in QUANT_TYPES)


# --- param size --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qwen2.5-0.5b-instruct", "0.5B"),
        ("Qwen2.5-1.5B", "1.5B"),
        ("llama-2-13b-chat", "13B"),
        ("Mixtral-8X22B-v0.1", "8x22B"),
        ("qwen3-30b-a3b", "30B-A3B"),
        ("Qwen3-235B-A22B-Thinking-2507", "235B-A22B"),
        ("SmolLM2-135m", "135M"),
        ("Qwen/Qwen2.5-7B-Instruct-GGUF", "7B"),
        ("7B/model.gguf", "7B"),
        ("model-7b_q4_0.gguf", "7B"),
    ],
)
def test_parse_param_size(name: str, expected: str) -> None:
    assert parse_param_size(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "model-Q4_0.gguf",
        "mistral-v0.1.gguf",
        "Phi-3-mini-32k-instruct.gguf",
        "Qwen3-A3B.gguf",  # the active part alone is not a size
        "Qwen2.5B.gguf",  # glued to a version number: ambiguous
        "Falcon3-Instruct-1.58bit.gguf",
        "model-IQ1_M.gguf",
        "model.gguf",
    ],
)
def test_parse_param_size_none(name: str) -> None:
    assert parse_param_size(name) is None


def test_parse_param_size_prefers_billions_over_millions() -> None:
    # "1M" is the context length here, not the size
    assert parse_param_size("Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf") == "7B"


@pytest.mark.parametrize(
    ("size", "billions"),
    [
        ("7B", 7.0),
        ("0.5B", 0.5),
        ("1.1B", 1.1),
        ("135M", 0.135),
        ("360m", 0.36),
        ("8x7B", 56.0),
        ("8x22B", 176.0),
        ("30B-A3B", 30.0),
        ("235B-A22B", 235.0),
    ],
)
def test_param_billions(size: str, billions: float) -> None:
    assert param_billions(size) == pytest.approx(billions)


@pytest.mark.parametrize("size", [None, "", "A3B", "32k", "big", "7"])
def test_param_billions_unknown(size: str | None) -> None:
    assert param_billions(size) is None


def test_param_billions_round_trips_parse() -> None:
    parsed = parse_filename("mixtral-8x7b-instruct-v0.1.Q5_K_M.gguf")
    assert param_billions(parsed.param_size) == 56.0


# --- shards and variants -----------------------------------------------------------------------


def test_parse_shard() -> None:
    assert parse_shard("model-Q4_K_M-00001-of-00003.gguf") == (1, 3)
    assert parse_shard("model-Q4_K_M-00003-of-00003.gguf") == (3, 3)
    assert parse_shard("model-Q4_K_M-00001-OF-00002.GGUF") == (1, 2)
    assert parse_shard("model-Q4_K_M-00002-of-00002") == (2, 2)
    assert parse_shard("model-Q4_K_M.gguf") is None
    assert parse_shard("model-00004-of-00003.gguf") is None  # index past the total
    assert parse_shard("model-00000-of-00003.gguf") is None
    assert parse_shard("llama-2-70b-chat.Q8_0.gguf-split-a") is None


def test_variant_groups_shards_and_keeps_folder() -> None:
    names = [f"Q4_K_M/model-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    variants = {parse_filename(n).variant for n in names}
    assert variants == {"Q4_K_M/model-Q4_K_M.gguf"}
    other = parse_filename("Q8_0/model-Q8_0-00001-of-00003.gguf").variant
    assert other == "Q8_0/model-Q8_0.gguf"


def test_variant_of_unsplit_file_is_the_file_name() -> None:
    parsed = parse_filename("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf")
    assert parsed.shard is None
    assert parsed.variant == "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"


def test_unknown_name_parses_to_nones() -> None:
    assert parse_filename("model.gguf") == ParsedName(
        filename="model.gguf", quant=None, param_size=None, shard=None, variant="model.gguf"
    )


# --- model files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "llama-2-7b-chat.Q4_K_M.gguf",
        "model.gguf",
        "MODEL-Q8_0.GGUF",
        "Q4_K_M/Model-00001-of-00002.gguf",
        "UD-Q2_K_XL/Qwen3-235B-A22B-UD-Q2_K_XL-00002-of-00002.gguf",
    ],
)
def test_is_model_file_true(filename: str) -> None:
    assert is_model_file(filename) is True


@pytest.mark.parametrize(
    "filename",
    [
        "README.md",
        ".gitattributes",
        "config.json",
        "imatrix.dat",
        "Meta-Llama-3.1-8B-Instruct.imatrix",
        "gemma-2-9b-it-imatrix.gguf",
        "imatrix_unsloth.gguf",
        "mmproj-model-f16.gguf",
        "mmproj-SmolVLM-256M-Instruct-Q8_0.gguf",
        "gemma-3-4b-it-mmproj-f16.gguf",
        "Qwen2.5-VL-7B/mmproj-BF16.gguf",
        "llama-2-70b-chat.Q8_0.gguf-split-a",
        "model.safetensors",
    ],
)
def test_is_model_file_false(filename: str) -> None:
    assert is_model_file(filename) is False


def test_mmproj_still_parses() -> None:
    parsed = parse_filename("mmproj-model-f16.gguf")
    assert parsed.quant == "F16"
    assert not is_model_file(parsed.filename)


# --- chat names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "gemma-2-9b-it",
        "gemma-2-9b-IT-Q4_K_M.gguf",
        "gemma-3-4b-it-qat-q4_0.gguf",
        "google_gemma-3-12b-it-Q4_K_M.gguf",
        "Llama-2-7B-Chat",
        "Qwen2.5-7B-Instruct",
        "openchat_3.5",
        "Mistral-7B-Assistant",
        "some-model-conversational",
    ],
)
def test_is_chat_name_true(name: str) -> None:
    assert is_chat_name(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "Meta-Llama-3.1-8B",
        "Qwen2.5-7B",
        "mistral-7b-v0.1",
        "Mistral-Nemo-Base-2407",
        "bitnet-b1.58-2B-4T",
        "italian-llama-7b",  # "it" inside a word is not a signal
        "instructor-xl",  # an embedding model, not instruct-tuned
        "Llama-3-8B-Italia",
    ],
)
def test_is_chat_name_false(name: str) -> None:
    assert is_chat_name(name) is False


# --- ranking and matching ----------------------------------------------------------------------


def test_quant_preference_starts_and_ends_as_documented() -> None:
    assert QUANT_PREFERENCE[0] == "Q4_K_M"
    assert QUANT_PREFERENCE[-3:] == ("F16", "BF16", "F32")


def test_quant_rank_order() -> None:
    ordered = [
        "Q4_K_M", "Q5_K_M", "Q4_K_S", "Q5_K_S", "Q6_K", "Q4_0", "IQ4_XS", "IQ4_NL", "Q8_0",
        "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "IQ2_XXS", "IQ1_S", "F16", "BF16", "F32",
    ]  # fmt: skip
    ranks = [quant_rank(q) for q in ordered]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)


def test_quant_rank_details() -> None:
    assert quant_rank("Q4_K_M") == 0
    assert quant_rank("q4_k_m") == 0
    assert quant_rank("UD-Q4_K_XL") == quant_rank("Q4_K_XL")
    assert quant_rank("UD-IQ1_M") == quant_rank("IQ1_M")
    assert quant_rank("FP16") == quant_rank("F16")
    # every lower-bit quant is preferred to full precision
    assert max(quant_rank(q) for q in QUANT_TYPES - {"F16", "BF16", "F32"}) < quant_rank("F16")


def test_quant_rank_unknown_is_last() -> None:
    worst_known = max(quant_rank(q) for q in QUANT_TYPES)
    assert quant_rank(None) > worst_known
    assert quant_rank("Q9_Z") > worst_known
    assert quant_rank("") > worst_known
    assert quant_rank(None) == quant_rank("nonsense")


def test_best_variant_by_rank() -> None:
    files = [
        "model-F16.gguf",
        "model-Q8_0.gguf",
        "model-Q2_K.gguf",
        "model-Q5_K_M.gguf",
        "model-Q4_K_M.gguf",
        "README.md",
    ]
    best = min(files, key=lambda f: quant_rank(parse_quant(f)))
    assert best == "model-Q4_K_M.gguf"


@pytest.mark.parametrize(
    ("actual", "wanted", "expected"),
    [
        ("Q4_K_M", "q4_k_m", True),
        ("Q4_K_M", "Q4_K_M", True),
        ("Q4_K_M", " Q4-K-M ", True),
        ("UD-Q4_K_XL", "Q4_K_XL", True),
        ("UD-Q4_K_XL", "ud-q4_k_xl", True),
        ("Q4_K_XL", "UD-Q4_K_XL", False),
        ("F16", "fp16", True),
        ("Q4_K_M", "Q4_K_S", False),
        ("Q4_K_M", "Q4", False),
        ("Q4_K_M", "", False),
        ("IQ2_XXS", "IQ2_XS", False),
        (None, "Q4_K_M", False),
    ],
)
def test_quant_matches(actual: str | None, wanted: str, expected: bool) -> None:
    assert quant_matches(actual, wanted) is expected
