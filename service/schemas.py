"""Wire schemas (msgspec Structs; unknown fields are refused). They also generate the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema

TopK = Annotated[int, msgspec.Meta(ge=1, le=1000, description="Return the k best labels with their scores.")]


class ClassifyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Classify one text (``text``) or several (``texts``); send exactly one of the two."""

    text: str | msgspec.UnsetType = msgspec.UNSET
    """One message to classify (absent when ``texts`` is sent; null is refused)."""
    texts: list[str] | msgspec.UnsetType = msgspec.UNSET
    """Several messages; results come back in the same order (absent when ``text`` is sent)."""
    top_k: TopK | None = None
    """Include the k best labels and their scores in ``scores``."""
    return_all_scores: bool = False
    """Include every label's score in ``scores`` (manifest order)."""
    truncate: bool = True
    """Cut texts longer than the model's max_length; false turns them into a 422 naming the token count."""


class Result(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer for one text."""

    label: str
    """Predicted label (single-label), or the highest-scoring label (multi-label)."""
    score: float
    """Score of ``label``: softmax probability (single-label) or sigmoid (multi-label)."""
    truncated: bool
    """True when the text was cut to the model's max_length."""
    num_tokens: int
    """Tokens in the text before truncation, special tokens included."""
    scores: dict[str, float] | None = None
    """Per-label scores when ``return_all_scores`` (all labels) or ``top_k`` (the k best) was asked."""
    labels: list[str] | None = None
    """Multi-label bundles only: every label whose score is at or over its threshold."""


class ModelRef(msgspec.Struct, kw_only=True):
    name: str
    version: str


class ClassifyResponse(msgspec.Struct, kw_only=True):
    results: list[Result]
    """One result per input text, in input order."""
    model: ModelRef
    request_id: str


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str
    """``ok`` when ready/alive, otherwise ``loading``, ``not_ready`` or ``shutting_down``."""
    reason: str | None = None
    """Why the service is not ready (e.g. the bundle file that failed its SHA-256 check)."""


class Info(msgspec.Struct, kw_only=True):
    """The manifest's public part and the active limits."""

    name: str
    version: str
    base_model: str
    task: str
    problem_type: str
    labels: list[str]
    thresholds: list[float] | None
    max_length: int
    quantization: dict[str, Any]
    versions: dict[str, str]
    degraded: bool
    created_at: str
    limits: dict[str, Any]


def classify_request_schema(*, max_text_chars: int, max_items: int) -> Schema:
    """The OpenAPI schema of a /classify body, as strict as the server: exactly one of ``text``/``texts``
    (two shapes, ``oneOf``), no unknown fields, non-empty texts within the run-time limits, ``top_k`` in
    range. What it cannot say (text only whitespace, control characters, the body-size limit) is a 400/413.
    """
    text = Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=max_text_chars,
        description="A message to classify: not empty, not only whitespace, no control characters.",
    )
    options = {
        "top_k": Schema(
            one_of=[Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=1000), Schema(type=OpenAPIType.NULL)],
            description="Include the k best labels and their scores in `scores`.",
        ),
        "return_all_scores": Schema(
            type=OpenAPIType.BOOLEAN, default=False, description="Include every label's score in `scores`."
        ),
        "truncate": Schema(
            type=OpenAPIType.BOOLEAN,
            default=True,
            description="Cut texts over max_length; false turns them into a 422 naming the token count.",
        ),
    }
    one = Schema(
        title="ClassifyOne",
        type=OpenAPIType.OBJECT,
        required=["text"],
        properties={"text": text, **options},
        additional_properties=False,
        description="One text.",
    )
    many = Schema(
        title="ClassifyMany",
        type=OpenAPIType.OBJECT,
        required=["texts"],
        properties={
            "texts": Schema(
                type=OpenAPIType.ARRAY,
                items=text,
                min_items=1,
                max_items=max_items,
                description="Several texts; results come back in the same order.",
            ),
            **options,
        },
        additional_properties=False,
        description="A list of texts.",
    )
    return Schema(
        one_of=[one, many],
        description="Send exactly one of `text` (a string) or `texts` (a list of strings).",
        examples=[
            {"text": "we need water and food"},
            {"texts": ["we need water", "nice weather"], "top_k": 2},
        ],
    )
