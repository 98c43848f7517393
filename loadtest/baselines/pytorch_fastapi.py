"""COMPARISON TARGET, NOT A PRODUCT: the seed project's design, kept so ``make bench`` can measure against it.

FastAPI + the fine-tuned PyTorch model from the same training run (``<run dir>/model``), one forward pass per
request, served by uvicorn. Same request and response shape as the service's ``POST /classify``
(``{"text"}`` or ``{"texts"}`` -> ``{"results": [{"label", "score", "truncated", "num_tokens"}], "model",
"request_id"}``), plus ``/health/ready``, ``/health/live`` and ``/info`` so the same load and checks run
against both.

What it keeps from the seed, on purpose: a synchronous endpoint (FastAPI runs it in its thread pool, so
concurrent requests run concurrent forward passes that share PyTorch's intra-op threads), transformers'
tokenizer called per request, eager PyTorch in fp32, no batching across requests. What it does not copy: the
seed's logging of every request (uvicorn's access log is off here, which only helps the baseline).

::

    python -m loadtest.baselines.pytorch_fastapi --model-dir artifacts/runs/latest/model --port 8001
"""

import argparse
import uuid
from pathlib import Path
from typing import Any, cast

DEFAULT_MAX_LENGTH = 128


def create_app(model_dir: Path, max_length: int = DEFAULT_MAX_LENGTH, version: str = "baseline") -> Any:
    """Build the FastAPI app around a ``save_pretrained`` checkpoint (loads the model now)."""
    import torch
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, ConfigDict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = cast(Any, AutoTokenizer).from_pretrained(model_dir)  # transformers leaves it unannotated
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    multi_label = model.config.problem_type == "multi_label_classification"
    name = f"pytorch-baseline:{model_dir.parent.name or model_dir.name}"

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str | None = None
        texts: list[str] | None = None

    app = FastAPI(title="PyTorch + FastAPI baseline (comparison target, not a product)")

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        texts = [request.text] if request.text is not None else request.texts
        if not texts:
            raise HTTPException(status_code=400, detail="send 'text' or a non-empty 'texts'")
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**encoded).logits
        scores = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, length in zip(scores.tolist(), lengths, strict=True):
            top = max(range(len(row)), key=row.__getitem__)
            results.append(
                {
                    "label": labels[top],
                    "score": row[top],
                    "truncated": length >= max_length,
                    "num_tokens": int(length),
                }
            )
        return {
            "results": results,
            "model": {"name": name, "version": version},
            "request_id": uuid.uuid4().hex,
        }

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {"name": name, "version": version, "labels": labels, "max_length": max_length}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baselines.pytorch_fastapi", description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="a save_pretrained checkpoint folder")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens (%(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    import uvicorn

    app = create_app(args.model_dir, args.max_length, version=args.model_dir.resolve().parent.name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
