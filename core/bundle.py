"""The model bundle: the one contract between the exporter and the service.

A bundle is a folder::

    models/<name>/
        manifest.json      what the model is and how to run it (``Manifest`` below)
        model.onnx         the int8 model the service loads by default
        model_fp32.onnx    the optimized fp32 model, for comparison
        tokenizer.json     the fast tokenizer; the service needs nothing else to tokenize
        parity.json        PyTorch vs ONNX figures from the export gate
        bench.json         in-process speed report (PyTorch eager / ONNX fp32 / ONNX int8)
        bench.png          the same as a chart
        MODEL_CARD.md      intended use, data, metrics, known limits

The exporter writes it with ``write_manifest``; the service reads it with ``load_bundle`` and checks it with
``verify_files``. This module imports only the standard library and msgspec, so the serving image (no torch)
can use it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import msgspec

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
MODEL_FP32_FILE = "model_fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
PARITY_FILE = "parity.json"
BENCH_FILE = "bench.json"
MODEL_CARD_FILE = "MODEL_CARD.md"

# Files the service cannot run without; every other file in ``Manifest.files`` is checked when present.
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE)

ProblemType = Literal["single_label", "multi_label"]


class BundleError(Exception):
    """A bundle that cannot be served: names the file and, where it applies, the field."""

    def __init__(self, path: Path | str, reason: str, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        self.reason = reason
        where = f"{self.path}" + (f" (field '{field}')" if field else "")
        super().__init__(f"{where}: {reason}")


class Quantization(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How ``model.onnx`` was produced from the fp32 graph (``export.quantize`` describes the modes)."""

    mode: Literal["static_int8", "static_int8_ffn_weight_only", "weight_only_int8", "dynamic_int8", "none"]
    """``static_int8`` (calibrated activation scales), ``static_int8_ffn_weight_only`` (the same, with the
    GELU-fed MatMuls 8-bit weight-only), ``weight_only_int8`` (MatMulNBits, 8-bit weights), ``dynamic_int8``
    (per-tensor activation scales at run time: batch-variant) or ``none`` (fp32 served)."""
    isa: str | None = None
    """Instruction set the integer types were chosen for: avx512_vnni, avx512, avx2 or arm64."""
    per_channel: bool = False
    """Whether weights were quantized per output channel."""
    source_graph: Literal["optimized", "optimized_unfused_attention", "exported"] = "optimized"
    """Which fp32 graph was quantized: the O2-optimized one (with or without attention fusion) or the plain
    export."""
    optimization_level: str | None = "O2"
    """optimum's ORTOptimizer level applied to the fp32 graph (``None``: the plain export)."""
    activation_type: str | None = None
    """Integer type of quantized activations (``uint8``), or ``None`` when activations stay float."""
    weight_type: str | None = None
    """Integer type of quantized weights (``int8`` or ``uint8``)."""
    reduce_range: bool | None = None
    """Whether weights use 7 bits (a remedy for u8 x s8 saturation on CPUs without VNNI)."""
    calibration: str | None = None
    """What fixed the activation scales (static mode)."""
    batch_invariant: bool | None = None
    """Measured by the export gate: a text's scores are the same alone and in any batch (``parity.json``)."""


class Manifest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``manifest.json``: everything the service needs to know about a bundle."""

    schema_version: int
    """Bundle format version; the service refuses versions it does not know."""
    name: str
    """Model name, e.g. ``disaster-related``; shown in /info, metrics and responses."""
    version: str
    """Model version, e.g. the training run id."""
    base_model: str
    """The checkpoint fine-tuning started from."""
    task: str
    """The dataset task, e.g. ``related`` or ``categories``."""
    problem_type: ProblemType
    """``single_label`` (softmax over labels) or ``multi_label`` (independent sigmoids)."""
    labels: list[str]
    """Label names in the model's output order."""
    thresholds: list[float] | None = None
    """Per-label decision thresholds for multi-label bundles (same order as ``labels``)."""
    max_length: int
    """Longest input in tokens, special tokens included; longer inputs are truncated or refused."""
    truncation_side: Literal["right", "left"] = "right"
    """Which end of an over-long text is cut."""
    pad_token_id: int = 0
    """Token id used to pad a batch to its longest text."""
    inputs: list[str]
    """ONNX input names: ``input_ids``, ``attention_mask``, and ``token_type_ids`` when the graph takes it."""
    output: str = "logits"
    """ONNX output holding the logits, shape ``[batch, len(labels)]``."""
    quantization: Quantization
    opset: int
    """ONNX opset of the exported graph."""
    versions: dict[str, str]
    """Library versions at export time: onnxruntime, optimum, transformers, torch."""
    files: dict[str, str]
    """SHA-256 (hex) of every other file in the bundle, by file name."""
    training_metrics: dict[str, object] = msgspec.field(default_factory=dict)
    """The run's ``metrics.json`` (per split)."""
    parity: dict[str, object] = msgspec.field(default_factory=dict)
    """Figures from the parity gate (``parity.json``)."""
    label_prior: dict[str, float] = msgspec.field(default_factory=dict)
    """Share of each label in the training split (drift alerts compare live predictions with it)."""
    degraded: bool = False
    """True when the parity gate failed and ``--allow-degraded`` was used."""
    created_at: str
    """ISO-8601 UTC time the bundle was written."""


class Bundle(msgspec.Struct, kw_only=True, frozen=True):
    """A bundle on disk: its folder and its parsed manifest."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so large models do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(folder: Path, exclude: tuple[str, ...] = (MANIFEST_FILE,)) -> dict[str, str]:
    """SHA-256 of every regular file directly in ``folder`` (the manifest itself excluded), sorted by name."""
    return {
        entry.name: sha256_file(entry)
        for entry in sorted(folder.iterdir())
        if entry.is_file() and entry.name not in exclude
    }


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (pretty, sorted keys) atomically inside ``folder``."""
    target = folder / MANIFEST_FILE
    tmp = folder / (MANIFEST_FILE + ".tmp")
    encoded = msgspec.json.format(msgspec.json.encode(manifest, order="sorted"), indent=2)
    tmp.write_bytes(encoded + b"\n")
    os.replace(tmp, target)
    return target


def load_bundle(folder: Path | str) -> Bundle:
    """Read and validate a bundle's manifest. Does not hash files: see ``verify_files``.

    Raises:
        BundleError: the folder, the manifest or a required file is missing, the manifest is malformed or
            of an unknown schema version, or its fields contradict each other.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BundleError(folder, "bundle folder does not exist")
    if not manifest_path.is_file():
        raise BundleError(manifest_path, "manifest is missing")
    raw = manifest_path.read_bytes()
    try:
        version = msgspec.json.decode(raw, type=dict[str, object]).get("schema_version")
    except msgspec.DecodeError as exc:
        raise BundleError(manifest_path, f"not valid JSON: {exc}") from exc
    if version != SCHEMA_VERSION:
        raise BundleError(
            manifest_path,
            f"unknown schema version {version!r}; this service reads version {SCHEMA_VERSION}",
            field="schema_version",
        )
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as exc:
        # msgspec names the path, e.g. "Expected `str`, got `int` - at `$.labels[0]`".
        raise BundleError(manifest_path, f"invalid manifest: {exc}") from exc
    _check_consistency(manifest_path, manifest)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise BundleError(folder / name, "required bundle file is missing")
    return Bundle(path=folder, manifest=manifest)


def verify_files(bundle: Bundle) -> None:
    """Check every file listed in the manifest exists and has the recorded SHA-256.

    Raises:
        BundleError: naming the first missing or altered file.
    """
    for name, expected in sorted(bundle.manifest.files.items()):
        path = bundle.file(name)
        if not path.is_file():
            raise BundleError(path, "listed in the manifest but missing", field=f"files.{name}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                path,
                f"SHA-256 mismatch: manifest says {expected[:12]}…, file has {actual[:12]}…",
                field=f"files.{name}",
            )
    for name in REQUIRED_FILES:
        if name not in bundle.manifest.files:
            raise BundleError(bundle.path / MANIFEST_FILE, f"no SHA-256 recorded for {name}", field="files")


def _check_consistency(path: Path, manifest: Manifest) -> None:
    if not manifest.labels:
        raise BundleError(path, "labels must not be empty", field="labels")
    if len(set(manifest.labels)) != len(manifest.labels):
        raise BundleError(path, "labels must be unique", field="labels")
    if manifest.problem_type == "multi_label":
        if manifest.thresholds is None or len(manifest.thresholds) != len(manifest.labels):
            raise BundleError(path, "multi_label bundles need one threshold per label", field="thresholds")
        if any(not 0.0 < t < 1.0 for t in manifest.thresholds):
            raise BundleError(path, "thresholds must lie strictly between 0 and 1", field="thresholds")
    if manifest.max_length < 2:
        raise BundleError(path, "max_length must be at least 2", field="max_length")
    if "input_ids" not in manifest.inputs:
        raise BundleError(path, "inputs must include input_ids", field="inputs")
