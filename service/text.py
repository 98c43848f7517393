"""What the service does to a text before the model sees it, and the one repair it makes to a request body.

The contract (docs/api.md "Text normalization", docs/contracts.md): a text is refused only when it is empty,
only whitespace, or over the limits. Everything else is classified: control characters, mojibake, zero-width
and bidi marks, any script, emoji.

The service changes one thing itself: a JSON ``\\uD800``-``\\uDFFF`` escape that is not half of a surrogate
pair (a lone surrogate: no UTF-8 text can hold it, and msgspec refuses it) becomes U+FFFD, the replacement
character. Everything else reaches the bundle's tokenizer unchanged, and the ``normalizer`` of its
``tokenizer.json`` decides what the model sees. For the MiniLM bundles that is the mojibake repairs training
puts first (``training.model.MOJIBAKE_REPAIRS``: the Kaggle tweets' "\\x89Û" + one symbol becomes a space,
"Â" before U+00A0-U+00BF is dropped), then a ``BertNormalizer``:

- ``clean_text`` drops U+0000, U+FFFD and every control, format or private-use character
  (categories Cc, Cf, Co: C0/C1 controls such as U+0089, zero-width and bidi marks, the BOM) except tab,
  newline and carriage return, and maps every whitespace character to a space;
- ``lowercase`` (``strip_accents`` unset) lowercases and strips accents, so "Ângela" reaches the model as
  "angela";
- ``handle_chinese_chars`` makes each CJK ideograph a word of its own.

A text made only of dropped characters reaches the model as ``[CLS] [SEP]`` and gets the model's answer for
an empty message.
"""

from __future__ import annotations

import re

# A \uXXXX escape of a UTF-16 surrogate; group 1 tells high (D800-DBFF) from low (DC00-DFFF).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD]([89abAB]|[c-fC-F])[0-9a-fA-F]{2}")
_REPLACEMENT_ESCAPE = b"\\ufffd"
_BACKSLASH = 0x5C


def _escaped(body: bytes, start: int) -> bool:
    """True when the backslash at ``start`` is itself escaped (an odd run of backslashes before it)."""
    count = 0
    index = start - 1
    while index >= 0 and body[index] == _BACKSLASH:
        count += 1
        index -= 1
    return count % 2 == 1


def lone_surrogate_escapes(body: bytes) -> list[int]:
    """Byte offsets of every ``\\uD800``-``\\uDFFF`` escape in a JSON body that is not half of a valid
    high+low pair. Linear in the body size (a body may hold a million of them)."""
    lone: list[int] = []
    pending_high = -1  # offset of a high-surrogate escape still waiting for its low half
    for match in _SURROGATE_ESCAPE.finditer(body):
        start = match.start()
        if _escaped(body, start):
            continue  # an escaped backslash followed by the letters "ud800", not an escape
        high = match.group(1) in b"89abAB"
        if pending_high != -1:
            if not high and start == pending_high + 6:
                pending_high = -1
                continue
            lone.append(pending_high)
            pending_high = -1
        if high:
            pending_high = start
        else:
            lone.append(start)
    if pending_high != -1:
        lone.append(pending_high)
    return lone


def replace_lone_surrogate_escapes(body: bytes, offsets: list[int]) -> bytes:
    """``body`` with the 6-byte escape at each offset replaced by ``\\ufffd`` (same length, so every other
    byte keeps its position)."""
    buffer = bytearray(body)
    for offset in offsets:
        buffer[offset : offset + 6] = _REPLACEMENT_ESCAPE
    return bytes(buffer)
