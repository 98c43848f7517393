"""Promise 1b: any text gets a valid result or its documented 4xx, never an exception; tokenization is
deterministic. Hypothesis property tests on the text path of the real app (tiny bundle, in process).

Texts are drawn from every Unicode code point, lone surrogates included, mixed with pieces that have broken
text pipelines before: NUL and other control characters, combining marks stacked hundreds deep,
right-to-left text and direction overrides, emoji with zero-width joiners and skin tones, byte-order marks,
noncharacters, private-use and astral code points. They are sent as JSON with ``\\uXXXX`` escapes (so a lone
surrogate arrives as ``\\ud800``, the way a JavaScript client would send one) or as raw UTF-8 (where a lone
surrogate becomes invalid UTF-8). 100,000-character texts go through an app with the character limit raised
to match, so they reach the tokenizer and the model.

The oracle is the documented contract (docs/api.md, ``service/text.py``): invalid UTF-8 (a lone
surrogate sent as raw bytes) -> 400 ``invalid_json``; a lone surrogate sent as a ``\\uXXXX`` escape is
replaced with U+FFFD and the text classified; then, per text in order, over ``max_text_chars`` -> 400
``too_many_characters`` and empty or whitespace-only -> 400 ``empty_text``, each naming the item;
``truncate=false`` and over ``max_length`` tokens -> 422 ``text_too_long``; everything else (control
characters, zero-width and bidi marks, noncharacters, any script) -> 200 with one well-formed result per
text, in order, counting exactly the tokens the engine's tokenizer counts for the text after replacement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from core.bundle import load_bundle
from core.engine import OnnxEngine
from tests.support.app import serve
from tests.support.fuzz import FUZZ_EXAMPLES

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
LONG = 100_000
MAX_TEXT_CHARS = 10_000  # the service default
SURROGATE = re.compile("[\ud800-\udfff]")

PIECES = [
    "\x00",
    "\x07",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\ufffd",
    "\u200b",
    "\u200d",
    "e\u0301",
    "a" + "\u0301\u0302\u0303\u0304" * 50,  # a "zalgo" stack
    "\u202e",  # right-to-left override
    "\u200f",
    "\u0645\u0627\u0621 \u0641\u064a \u0627\u0644\u0642\u0631\u064a\u0629",  # Arabic: water in the village
    "\u05de\u05d9\u05dd",  # Hebrew
    "\U0001f30a",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family: ZWJ sequence
    "\U0001f44d\U0001f3fd",  # skin tone
    "\u2764\ufe0f",  # variation selector
    "\U0001f1fa\U0001f1e6",  # flag
    "\ue000",  # private use
    "\U0010fffd",
    "\U0001d54f",  # mathematical double-struck
    "\u6c34\u707e",  # CJK: flood
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "\ud83c",  # high half of an emoji
    "flood",
    "we need water",
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "##ing",
    " ",
]

ANY_CHAR = st.characters(exclude_categories=())  # every code point, surrogates (Cs) included
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(ANY_CHAR, max_size=4)), max_size=30).map("".join),
)
PROPERTY_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
LONG_SETTINGS = settings(
    max_examples=max(10, FUZZ_EXAMPLES // 25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture(scope="module")
def client(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    with serve(tiny_bundle_dir) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def long_client(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    """Limits raised so 100,000-character texts (as \\uXXXX escapes: up to 1.2 MB) reach the model."""
    with serve(tiny_bundle_dir, max_text_chars=LONG, max_body_bytes=4_000_000, max_items=4) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engine(tiny_bundle_dir: Path) -> OnnxEngine:
    return OnnxEngine(load_bundle(tiny_bundle_dir), intra_op_threads=1)


def encode(body: dict[str, Any], escaped: bool) -> bytes:
    """JSON with every non-ASCII character as a \\uXXXX escape, or raw UTF-8 (lone surrogates then become
    bytes that are not valid UTF-8, as a broken client would send them)."""
    if escaped:
        return json.dumps(body, ensure_ascii=True).encode("ascii")
    return json.dumps(body, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def as_served(text: str) -> str:
    """The text the service classifies for a JSON string: every lone surrogate (Python's json keeps them,
    msgspec refuses them) becomes U+FFFD; valid pairs were already joined into one character."""
    return SURROGATE.sub("\ufffd", text)


def problem(text: str, where: str, max_chars: int) -> tuple[str, str] | None:
    """The documented 400 for one text as served, or None when it is classified."""
    if len(text) > max_chars:
        return where, "too_many_characters"
    if not text.strip():
        return where, "empty_text"
    return None


# Texts that pass validation (control characters included): no surrogates, so raw UTF-8 can carry them too.
CLEAN_CHAR = st.characters(exclude_categories=("Cs",))
CLEAN_PIECES = [p for p in PIECES if not SURROGATE.search(p)]
VALID_TEXTS = st.one_of(
    st.text(CLEAN_CHAR, min_size=1, max_size=200),
    st.lists(st.one_of(st.sampled_from(CLEAN_PIECES), st.text(CLEAN_CHAR, max_size=4)), max_size=30).map(
        "".join
    ),
).filter(lambda t: problem(t, "text", MAX_TEXT_CHARS) is None)


def check_error(response: Any, status: int, types: set[str]) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error"}, payload
    assert set(payload["error"]) == {"type", "message", "detail"}, payload
    assert payload["error"]["type"] in types, payload
    assert payload["error"]["message"]
    return payload["error"]


def check_results(response: Any, count: int, labels: list[str], max_length: int) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["request_id"]
    assert payload["model"]["name"]
    results = payload["results"]
    assert len(results) == count
    for result in results:
        assert result["label"] in labels
        assert 0.0 <= result["score"] <= 1.0
        assert result["num_tokens"] >= 2  # [CLS] and [SEP] at least
        assert result["truncated"] == (result["num_tokens"] > max_length)
    return results


def classify_and_check(
    client: TestClient[Any],
    engine: OnnxEngine,
    texts: list[str],
    *,
    single: bool,
    escaped: bool,
    truncate: bool,
) -> None:
    body: dict[str, Any] = {"text": texts[0]} if single else {"texts": texts}
    if not truncate:
        body["truncate"] = False
    raw = encode(body, escaped)
    response = client.post("/classify", content=raw, headers=JSON)
    event(f"status {response.status_code}")
    try:
        decoded = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        check_error(response, 400, {"invalid_json"})
        return
    received = [as_served(text) for text in ([decoded["text"]] if single else decoded["texts"])]
    for index, text in enumerate(received):
        found = problem(text, "text" if single else f"texts[{index}]", MAX_TEXT_CHARS)
        if found is None:
            continue
        where, kind = found
        error = check_error(response, 400, {kind})
        # The first offending text is named, so a client can fix it.
        assert error["detail"]["field"] == where, error
        return
    tokenized = engine.tokenize(received, truncate=True)
    too_long = [i for i, item in enumerate(tokenized) if item.num_tokens > engine.max_length]
    if not truncate and too_long:
        error = check_error(response, 422, {"text_too_long"})
        assert error["detail"]["num_tokens"] == tokenized[too_long[0]].num_tokens
        return
    results = check_results(response, len(received), list(engine.labels), engine.max_length)
    # The service counts tokens exactly as the engine's tokenizer does, in input order.
    assert [r["num_tokens"] for r in results] == [t.num_tokens for t in tokenized]


@PROPERTY_SETTINGS
@given(text=TEXTS, escaped=st.booleans(), truncate=st.booleans())
@example(text="\ud800", escaped=True, truncate=True)
@example(text="a\udc00b", escaped=False, truncate=True)
@example(text="\x00", escaped=True, truncate=True)
@example(text="Typhoon\x89\u00db\u00d2 \x9d flood", escaped=False, truncate=True)
@example(text="\u200b\u200d\u200e", escaped=True, truncate=True)
@example(text="\u202e\u0645\u0627\u0621 flood \U0001f30a", escaped=True, truncate=False)
@example(text="\u3000\u2028\u00a0", escaped=False, truncate=True)
def test_property_any_text_gets_a_result_or_a_documented_4xx(
    client: TestClient[Any], engine: OnnxEngine, text: str, escaped: bool, truncate: bool
) -> None:
    classify_and_check(client, engine, [text], single=True, escaped=escaped, truncate=truncate)


@PROPERTY_SETTINGS
@given(
    # Mostly valid items, so that many lists reach the model; a bad item anywhere must be named.
    texts=st.lists(st.one_of(VALID_TEXTS, VALID_TEXTS, VALID_TEXTS, TEXTS), min_size=1, max_size=8),
    escaped=st.booleans(),
)
def test_property_text_lists_answer_in_order_or_name_the_bad_item(
    client: TestClient[Any], engine: OnnxEngine, texts: list[str], escaped: bool
) -> None:
    classify_and_check(client, engine, texts, single=False, escaped=escaped, truncate=True)


LONG_TEXTS = st.tuples(
    st.one_of(st.sampled_from(PIECES), st.text(ANY_CHAR, min_size=1, max_size=6)),
    st.integers(min_value=LONG // 4, max_value=LONG),
).map(lambda pair: (pair[0] * (LONG // len(pair[0]) + 1))[: pair[1]])


@LONG_SETTINGS
@given(text=LONG_TEXTS, escaped=st.booleans())
@example(text="flood " * (LONG // 6) + "abcd", escaped=False)
@example(text="\U0001f30a" * LONG, escaped=True)
@example(text="a" + "\u0301" * (LONG - 1), escaped=True)
@example(text="\u0645\u0627\u0621 " * (LONG // 4), escaped=True)
@example(text="\u6c34" * LONG, escaped=False)
def test_property_100k_character_texts(
    long_client: TestClient[Any], engine: OnnxEngine, text: str, escaped: bool
) -> None:
    body = encode({"text": text}, escaped)
    response = long_client.post("/classify", content=body, headers=JSON)
    try:
        received = as_served(json.loads(body.decode("utf-8"))["text"])
    except UnicodeDecodeError:
        check_error(response, 400, {"invalid_json"})
        return
    found = problem(received, "text", LONG)
    if found is not None:
        check_error(response, 400, {found[1]})
        return
    (result,) = check_results(response, 1, list(engine.labels), engine.max_length)
    assert result["num_tokens"] == engine.tokenize([received])[0].num_tokens


def test_100k_character_text_over_the_default_limit_is_a_400_naming_it(client: TestClient[Any]) -> None:
    response = client.post("/classify", json={"text": "flood " * (LONG // 6) + "abcd"})
    error = check_error(response, 400, {"too_many_characters"})
    assert error["detail"]["chars"] == LONG
    assert client.post("/classify", json={"text": "still answering"}).status_code == 200


@PROPERTY_SETTINGS
@given(text=VALID_TEXTS, others=st.lists(VALID_TEXTS, max_size=6), position=st.integers(0, 6))
def test_property_tokenization_is_deterministic(
    engine: OnnxEngine, text: str, others: list[str], position: int
) -> None:
    """The same text gives the same ids every time, alone or anywhere inside a batch of other texts."""
    alone = engine.tokenize([text])[0]
    again = engine.tokenize([text])[0]
    batch = [*others[:position], text, *others[position:]]
    inside = engine.tokenize(batch)[min(position, len(others))]
    for other in (again, inside):
        assert other.ids.tolist() == alone.ids.tolist()
        assert other.num_tokens == alone.num_tokens
        assert other.truncated == alone.truncated
    assert len(alone.ids) <= engine.max_length


# Characters the bundle's BertNormalizer (clean_text) drops before anything else (docs/api.md, text
# normalization): C0/C1 controls left by mojibake, zero-width and bidi marks, the BOM, private use, U+FFFD.
DROPPED = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x89", "\x9d", "\u200b", "\u200c", "\u200d", "\u200e",
           "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff", "\ue000", "\ufffd"]  # fmt: skip


SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")


@PROPERTY_SETTINGS
@given(
    text=VALID_TEXTS,
    junk=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(DROPPED)), min_size=1, max_size=8),
)
def test_property_dropped_characters_do_not_change_what_the_model_sees(
    engine: OnnxEngine, text: str, junk: list[tuple[int, str]]
) -> None:
    """Injecting characters the normalizer drops, anywhere, gives the model the same token ids.

    Not for texts holding a special token's literal text ("[CLS]", "[SEP]", ...): the tokenizer matches those
    before normalizing, so a dropped character inside one turns it into ordinary word pieces. Nor for texts
    holding "Â" or "Û", the letters of the mojibake repairs (``training.model.MOJIBAKE_REPAIRS``) that run
    before the drop: a U+0089 put before a "Û" makes a Kaggle mojibake mark, a zero-width space put after "Â"
    hides a misread no-break space.
    """
    assume(not any(token in text for token in SPECIAL_TOKENS))
    assume("Â" not in text and "Û" not in text)
    noisy = text
    for position, char in junk:
        at = position % (len(noisy) + 1)
        noisy = noisy[:at] + char + noisy[at:]
    assert engine.tokenize([noisy])[0].ids.tolist() == engine.tokenize([text])[0].ids.tolist()
