"""The fine-tuning loop and the run directory it writes.

A plain PyTorch loop: AdamW (no decay on biases and LayerNorm), linear warm-up then linear decay, gradient
clipping, batches padded to their longest text, optional class weights, evaluation on validation once per
epoch (or
every ``train.eval_every_steps``), early stopping on validation F1 keeping the best weights, seeded
throughout.
Under ``torchrun`` it runs DistributedDataParallel; rank 0 alone writes the run directory, whose layout,
data-file writer and ``latest`` link are ``core.run_dir``'s (``docs/contracts.md`` section 2).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from numpy.typing import NDArray

from core.host import usable_cores
from core.run_dir import (
    CONFUSION_MATRIX_FILE,
    LOG_FILE,
    MODEL_DIR,
    TRAINING_CURVES_FILE,
    update_latest,
    write_run_files,
)
from training import distributed
from training.baseline import BaselineMetrics, comparison_lines, fit_baseline
from training.config import Config, TrainConfig
from training.data import ExampleRow, Prepared, label_counts, load_prepared, subset
from training.evaluate import (
    Features,
    History,
    Scores,
    SplitMetrics,
    Targets,
    collate,
    compute_metrics,
    plot_confusion_matrix,
    plot_training_curves,
    predict_scores,
    shift_binary_scores,
    tune_decision_threshold,
    tune_thresholds,
)
from training.model import (
    classifier_head,
    fold_decision_threshold,
    init_head_bias_to_prior,
    load_model,
    load_tokenizer,
    resolve_base,
)

if TYPE_CHECKING:
    import torch
    import wandb
    from torch.utils.data import DataLoader, Sampler
    from tqdm import tqdm
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("training")


class RunMetrics(TypedDict, total=False):
    """``metrics.json`` (``docs/contracts.md`` section 2)."""

    validation: SplitMetrics
    test: SplitMetrics
    decision_threshold: float | None
    baseline: BaselineMetrics
    training: dict[str, object]


def seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(choice: str, dist_info: distributed.DistInfo) -> torch.device:
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def encode_labels(rows: list[ExampleRow], labels: list[str], problem_type: str) -> Targets:
    index = {label: i for i, label in enumerate(labels)}
    if problem_type == "multi_label":
        target = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for r, row in enumerate(rows):
            for label in row["labels"]:
                if label in index:
                    target[r, index[label]] = 1.0
        return target
    return np.array([index[row["label"]] for row in rows], dtype=np.int64)


def tokenize(tokenizer: PreTrainedTokenizerBase, rows: list[ExampleRow], max_length: int) -> list[Features]:
    """Token ids per text, truncated to ``max_length``, not padded (batches pad to their longest)."""
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]


def class_weights(targets: Targets, problem_type: str, n_labels: int) -> NDArray[np.float32]:
    """Inverse-frequency weights (single-label) or negative/positive ratios (multi-label), in [0.1, 50]."""
    if problem_type == "multi_label":
        positives = targets.sum(axis=0)
        weights = (len(targets) - positives) / np.maximum(positives, 1)
    else:
        counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
        weights = len(targets) / (n_labels * np.maximum(counts, 1))
    clipped: NDArray[np.float32] = np.clip(weights, 0.1, 50.0).astype(np.float32)
    return clipped


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's bytes: equal on all ranks when DDP kept the replicas in sync."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class LengthGroupedBatches:
    """Training batches of texts of similar length, still in a random order (the idea of HF's
    ``group_by_length``).

    Each epoch shuffles the rows, cuts them into windows of ``window`` batches, sorts each window by length
    and cuts it into batches, then shuffles the batches. Padding to the longest text of a random batch of
    messages doubles the tokens computed (2.01x the real tokens on this dataset's training split at
    max_length 64); grouped batches waste 2%.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        span = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=self.lengths.__getitem__)
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)


def new_run_dir(config: Config) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.runs_dir) / f"{stamp}-{config.name}"
    suffix = 1
    while run_dir.exists():  # two runs in the same second
        suffix += 1
        run_dir = Path(config.runs_dir) / f"{stamp}-{config.name}-{suffix}"
    return run_dir


class Tracker:
    """Experiment tracking: ``none`` does nothing; ``wandb`` logs config, metrics and plots (lazy import)."""

    def __init__(self, kind: str, config: Config, run_dir: Path | None) -> None:
        self.run: wandb.Run | None = None
        if kind != "wandb" or run_dir is None:
            return
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=config.wandb_project,
            name=run_dir.name,
            dir=str(run_dir),
            config=config.to_dict(),
            reinit=True,
        )

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self, summary: dict[str, float], images: list[Path]) -> None:
        if self.run is None:
            return
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.log({path.stem: self.wandb.Image(str(path)) for path in images if path.is_file()})
        self.run.finish()


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run(config: Config, run_dir: Path | None = None) -> Path | None:
    """Train with ``config`` and write the run directory; returns it on rank 0 (None on other ranks)."""
    import torch

    dist_info = distributed.init(
        use_cuda=config.train.device == "cuda"
        or (config.train.device == "auto" and torch.cuda.is_available())
    )
    # Restore process-wide torch settings afterwards, so a run inside a larger program (or a test session)
    # leaves the thread count and the deterministic-algorithms switch as it found them.
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    root, ours = logging.getLogger(), logging.getLogger("training")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)  # train.log always holds the run's INFO lines
    try:
        return _run(config, run_dir, dist_info)
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:  # the run's train.log, also when the run failed
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        ours.setLevel(our_level)
        distributed.shutdown(dist_info)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@dataclass
class _Splits:
    """The rows this run uses (after the configured subsets) and what they were prepared as."""

    prepared: Prepared
    train: list[ExampleRow]
    validation: list[ExampleRow]
    test: list[ExampleRow]

    def used(self) -> dict[str, list[ExampleRow]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass
class _Encoded:
    """One split as the model sees it: token ids per text and the encoded targets."""

    features: list[Features]
    targets: Targets


@dataclass
class _Best:
    """The best validation evaluation so far; its weights are the ones the run keeps."""

    state: dict[str, torch.Tensor]
    f1: float = -1.0
    step: int = 0
    epoch: int = 0
    evals_without_gain: int = 0
    validation_scores: Scores | None = None


@dataclass
class _LoopResult:
    steps: int = 0
    examples_seen: int = 0
    train_seconds: float = 0.0
    epochs_run: int = 0


def _run(config: Config, run_dir: Path | None, dist_info: distributed.DistInfo) -> Path | None:
    import torch

    cfg, main = config.train, dist_info.is_main
    device = _set_up_process(cfg, dist_info)
    if main:
        run_dir = _open_run_dir(config, run_dir)
    log.info(
        "device %s, %d torch threads, %d process(es)%s",
        device,
        torch.get_num_threads(),
        dist_info.world_size,
        f" ({dist_info.backend})" if dist_info.enabled else "",
    )
    splits = _load_splits(config, dist_info)
    labels, problem_type = splits.prepared.labels, splits.prepared.problem_type
    binary_tuning = cfg.tune_decision_threshold and problem_type == "single_label" and len(labels) == 2
    baseline_metrics = _fit_baseline(splits, cfg.seed, binary_tuning) if main else None

    tokenizer = load_tokenizer(config.model.base)
    pad_id = tokenizer.pad_token_id or 0
    train_set = _encode(tokenizer, splits.train, splits.prepared, config.model.max_length)
    validation_set = _encode(tokenizer, splits.validation, splits.prepared, config.model.max_length)
    inner, model = _build_model(config, splits.prepared, train_set.targets, device, dist_info)
    sampler, loader = _train_loader(train_set.features, cfg, dist_info)
    total_steps = cfg.epochs * len(loader)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = _optimizer(inner, cfg)
    schedule = _LearningRateSchedule(cfg, total_steps, dist_info)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = _loss_function(cfg, problem_type, labels, train_set.targets, device)

    tracker = Tracker(config.tracker, config, run_dir if main else None)
    history: History = {"step": [], "loss": [], "eval_step": [], "val_f1": [], "val_loss": []}
    validator = _Validator(
        inner=inner,
        validation=validation_set,
        prepared=splits.prepared,
        cfg=cfg,
        device=device,
        pad_id=pad_id,
        dist_info=dist_info,
        tracker=tracker,
        history=history,
    )
    log.info(
        "training: %d epoch(s) x %d steps (%d total, %d warm-up), batch %d x %d process(es), lr %g",
        cfg.epochs,
        len(loader),
        total_steps,
        schedule.warmup_steps,
        cfg.batch_size,
        dist_info.world_size,
        cfg.learning_rate,
    )
    loop = _TrainingLoop(
        model=model,
        inner=inner,
        train_set=train_set,
        loader=loader,
        sampler=sampler,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        schedule=schedule,
        validate=validator,
    )
    result = loop.run()

    best = validator.best
    inner.load_state_dict(best.state)
    digests = distributed.gather(dist_info, parameter_digest(inner))
    examples_per_second = result.examples_seen / result.train_seconds if result.train_seconds > 0 else 0.0
    log.info(
        "trained %d steps, %d examples in %.1f s: %.1f examples/s; best validation F1 %.4f at step %d",
        result.steps,
        result.examples_seen,
        result.train_seconds,
        examples_per_second,
        best.f1,
        best.step,
    )
    if not main:
        return None
    assert run_dir is not None
    assert baseline_metrics is not None

    eval_start = time.perf_counter()
    metrics, thresholds = _final_evaluation(
        inner=inner,
        tokenizer=tokenizer,
        splits=splits,
        validation_set=validation_set,
        best=best,
        config=config,
        device=device,
        pad_id=pad_id,
        binary_tuning=binary_tuning,
    )
    metrics["baseline"] = baseline_metrics
    metrics["training"] = {
        "examples_per_second": examples_per_second,
        "train_seconds": result.train_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "examples_seen": result.examples_seen,
        "best_epoch": best.epoch,
        "best_step": best.step,
        "best_validation_f1": best.f1,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "world_size": dist_info.world_size,
        "backend": dist_info.backend,
        "parameter_sha256_per_rank": digests,
        "replicas_in_sync": len(set(digests)) == 1,
        "torch_version": torch.__version__,
    }
    _log_test_metrics(metrics, baseline_metrics)
    write_run_dir(
        run_dir,
        config=config,
        prepared=splits.prepared,
        used=splits.used(),
        model=inner,
        tokenizer=tokenizer,
        metrics=metrics,
        thresholds=thresholds,
        history=history,
    )
    tracker.finish(
        {f"test/{k}": v for k, v in metrics["test"].items() if isinstance(v, int | float)},
        [run_dir / "training_curves.png", run_dir / "confusion_matrix.png"],
    )
    if config.link_latest:
        link = update_latest(run_dir)
        log.info("wrote %s (%s -> %s)", run_dir, link, run_dir.name)
    else:
        log.info("wrote %s (latest not updated: link_latest is false)", run_dir)
    return run_dir


def _set_up_process(cfg: TrainConfig, dist_info: distributed.DistInfo) -> torch.device:
    """Rank-0-only logging, the device, the CPU thread count and the seeds."""
    import torch

    if not dist_info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("training").setLevel(logging.WARNING)
    device = pick_device(cfg.device, dist_info)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or max(1, usable_cores() // dist_info.local_world_size))
    seed_everything(cfg.seed, cfg.deterministic)
    return device


def _open_run_dir(config: Config, run_dir: Path | None) -> Path:
    run_dir = Path(run_dir) if run_dir else new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    _attach_log_file(run_dir)
    log.info("run directory: %s", run_dir)
    return run_dir


def _load_splits(config: Config, dist_info: distributed.DistInfo) -> _Splits:
    """Rank 0 fetches and prepares the data (cache); the others then read the cache it wrote."""
    prepared = load_prepared(config) if dist_info.is_main else None
    distributed.barrier(dist_info)
    if prepared is None:
        prepared = load_prepared(config)
    seed = config.train.seed
    splits = _Splits(
        prepared,
        train=subset(prepared.splits["train"], config.data.train_subset, seed),
        validation=subset(prepared.splits["validation"], config.data.validation_subset, seed),
        test=subset(prepared.splits["test"], config.data.test_subset, seed),
    )
    log.info(
        "data: train %d (of %d), validation %d, test %d; labels %s",
        len(splits.train),
        len(prepared.splits["train"]),
        len(splits.validation),
        len(splits.test),
        prepared.labels,
    )
    return splits


def _fit_baseline(splits: _Splits, seed: int, binary_tuning: bool) -> BaselineMetrics:
    """The classical baseline on the very rows the model sees; seconds, so always part of the run."""
    labels, problem_type = splits.prepared.labels, splits.prepared.problem_type
    used = splits.used()
    metrics = fit_baseline(
        problem_type=problem_type,
        labels=labels,
        texts={name: [row["text"] for row in rows] for name, rows in used.items()},
        targets={name: encode_labels(rows, labels, problem_type) for name, rows in used.items()},
        seed=seed,
        tune_decision=binary_tuning,
    ).metrics
    log.info(
        "baseline test: F1 %.4f, macro-F1 %.4f, accuracy %.4f, ROC-AUC %s",
        metrics["test"]["f1"],
        metrics["test"]["macro_f1"],
        metrics["test"]["accuracy"],
        metrics["test"]["roc_auc"],
    )
    return metrics


def _encode(
    tokenizer: PreTrainedTokenizerBase, rows: list[ExampleRow], prepared: Prepared, max_length: int
) -> _Encoded:
    return _Encoded(
        tokenize(tokenizer, rows, max_length), encode_labels(rows, prepared.labels, prepared.problem_type)
    )


def _build_model(
    config: Config,
    prepared: Prepared,
    train_targets: Targets,
    device: torch.device,
    dist_info: distributed.DistInfo,
) -> tuple[PreTrainedModel, torch.nn.Module]:
    """The classifier (its new head seeded alike on every rank) and the module to train: it or its DDP."""
    import torch

    torch.manual_seed(config.train.seed)
    inner = load_model(config.model.base, prepared.labels, prepared.problem_type)
    if prepared.problem_type == "multi_label":
        init_head_bias_to_prior(inner, train_targets.mean(axis=0))
    inner = inner.to(device)  # type: ignore[arg-type]  # transformers' wrapper of Module.to is mistyped
    inner.train()
    if not dist_info.enabled:
        return inner, inner
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return inner, DistributedDataParallel(inner, device_ids=ids)


def _train_loader(
    features: list[Features], cfg: TrainConfig, dist_info: distributed.DistInfo
) -> tuple[Sampler[int], DataLoader[int]]:
    """Batches of row indices (``collate`` looks the features up): random, or grouped by length."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    dataset = list(range(len(features)))
    sampler: Sampler[int]
    if dist_info.enabled:
        sampler = DistributedSampler(
            dataset,  # type: ignore[arg-type]  # a list is a map-style dataset num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=cfg.seed
        )
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.group_by_length and not dist_info.enabled:
        batches = LengthGroupedBatches([len(f["input_ids"]) for f in features], cfg.batch_size, cfg.seed)
        return sampler, DataLoader(dataset, batch_sampler=batches, collate_fn=list)  # type: ignore[arg-type]
    if cfg.group_by_length:
        log.warning("train.group_by_length is ignored under torchrun (each rank samples its own share)")
    loader: DataLoader[int] = DataLoader(
        dataset,  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=list,
        drop_last=False,
    )
    return sampler, loader


def _optimizer(inner: PreTrainedModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with four groups: encoder and head (own learning rate), each with and without weight decay."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight", "norm.weight")
    head_ids = {id(p) for p in classifier_head(inner).parameters()}
    head_lr = cfg.head_learning_rate or cfg.learning_rate
    groups: list[dict[str, Any]] = []
    for is_head, group_lr in ((False, cfg.learning_rate), (True, head_lr)):
        for decay in (True, False):
            params = [
                p
                for n, p in inner.named_parameters()
                if (id(p) in head_ids) == is_head and (not n.endswith(no_decay)) == decay
            ]
            if params:
                weight_decay = cfg.weight_decay if decay else 0.0
                groups.append({"params": params, "lr": group_lr, "weight_decay": weight_decay})
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


class _LearningRateSchedule:
    """Linear warm-up, then linear decay over the steps or the time budget, whichever is further along."""

    def __init__(self, cfg: TrainConfig, total_steps: int, dist_info: distributed.DistInfo) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.warmup_steps = int(cfg.warmup_ratio * total_steps)
        self.dist_info = dist_info
        self.budget_seconds = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
        self.start = time.perf_counter()
        self.fraction = 0.0
        """Share of the time budget used, as of the last step (0 without a budget)."""

    @property
    def time_is_up(self) -> bool:
        return self.fraction >= 1.0

    def __call__(self, step: int) -> float:
        if self.budget_seconds is not None:
            main = self.dist_info.is_main
            elapsed = (time.perf_counter() - self.start) / self.budget_seconds if main else None
            # Every rank must follow rank 0's clock, or the replicas would disagree on when to stop.
            shared = distributed.broadcast(self.dist_info, elapsed) if self.dist_info.enabled else elapsed
            self.fraction = float(shared if shared is not None else 0.0)
            if self.fraction > step / max(1, self.total_steps):
                fraction, warmup_ratio = min(1.0, self.fraction), self.cfg.warmup_ratio
                if fraction < warmup_ratio:
                    return max(fraction, 1e-3) / warmup_ratio
                return max(0.0, (1.0 - fraction) / max(1e-9, 1.0 - warmup_ratio))
        if step < self.warmup_steps:
            return (step + 1) / max(1, self.warmup_steps)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))


def _loss_function(
    cfg: TrainConfig, problem_type: str, labels: list[str], train_targets: Targets, device: torch.device
) -> torch.nn.Module:
    import torch

    weights = None
    if cfg.class_weights == "balanced":
        weights = torch.tensor(class_weights(train_targets, problem_type, len(labels)), device=device)
        log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
    if problem_type == "multi_label":
        return torch.nn.BCEWithLogitsLoss(pos_weight=weights)
    return torch.nn.CrossEntropyLoss(weight=weights)


def _state_on_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Validator:
    """Evaluates on validation during training and keeps the best weights; decides early stopping.

    Rank 0 evaluates; every rank learns whether this is the new best and whether to stop.
    """

    def __init__(
        self,
        *,
        inner: PreTrainedModel,
        validation: _Encoded,
        prepared: Prepared,
        cfg: TrainConfig,
        device: torch.device,
        pad_id: int,
        dist_info: distributed.DistInfo,
        tracker: Tracker,
        history: History,
    ) -> None:
        self.inner, self.validation, self.prepared, self.cfg = inner, validation, prepared, cfg
        self.device, self.pad_id, self.dist_info = device, pad_id, dist_info
        self.tracker, self.history = tracker, history
        self.best = _Best(state=_state_on_cpu(inner))

    def scores(self) -> Scores:
        return predict_scores(
            self.inner,
            features=self.validation.features,
            problem_type=self.prepared.problem_type,
            batch_size=self.cfg.eval_batch_size,
            device=self.device,
            pad_token_id=self.pad_id,
        )

    def __call__(self, step: int, epoch: int) -> bool:
        """Evaluate at ``step``; True when early stopping says to stop."""
        decision = self._evaluate(step, epoch) if self.dist_info.is_main else None
        best = self.best
        if distributed.broadcast(self.dist_info, decision):
            best.f1 = self.history["val_f1"][-1] if self.dist_info.is_main else best.f1
            best.step, best.epoch, best.evals_without_gain = step, epoch, 0
            best.state = _state_on_cpu(self.inner)
        else:
            best.evals_without_gain += 1
        patience = self.cfg.early_stopping_patience
        return patience > 0 and best.evals_without_gain >= patience

    def _evaluate(self, step: int, epoch: int) -> bool:
        """Rank 0: score validation, record it, and say whether it beats the best so far."""
        problem_type, targets = self.prepared.problem_type, self.validation.targets
        scores = self.scores()
        tuned = tune_thresholds(targets, scores) if problem_type == "multi_label" else None
        metrics = compute_metrics(problem_type, self.prepared.labels, targets, scores, tuned)
        improved = metrics["f1"] > self.best.f1
        self.history["eval_step"].append(step)
        self.history["val_f1"].append(metrics["f1"])
        self.history["val_loss"].append(metrics["loss"])
        self.tracker.log({"validation/f1": metrics["f1"], "validation/loss": metrics["loss"]}, step=step)
        log.info(
            "step %d (epoch %d): validation F1 %.4f, accuracy %.4f, loss %.4f%s",
            step,
            epoch,
            metrics["f1"],
            metrics["accuracy"],
            metrics["loss"],
            " (best so far)" if improved else "",
        )
        if improved:
            self.best.validation_scores = scores  # the final report reuses them: same weights, same texts
        return improved


class _LogWindow:
    """Loss and throughput since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.examples, self.start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, examples: int) -> None:
        self.loss += loss
        self.steps += 1
        self.examples += examples


class _TrainingLoop:
    """The epochs and the steps: forward, backward, clip, step; periodic logs and validation."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        inner: PreTrainedModel,
        train_set: _Encoded,
        loader: DataLoader[int],
        sampler: Sampler[int],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        loss_fn: torch.nn.Module,
        schedule: _LearningRateSchedule,
        validate: _Validator,
    ) -> None:
        self.model, self.inner, self.train_set = model, inner, train_set
        self.loader, self.sampler = loader, sampler
        self.optimizer, self.scheduler, self.loss_fn = optimizer, scheduler, loss_fn
        self.schedule, self.validate = schedule, validate
        self.cfg, self.device, self.pad_id = validate.cfg, validate.device, validate.pad_id
        self.dist_info, self.tracker, self.history = validate.dist_info, validate.tracker, validate.history

    def run(self) -> _LoopResult:
        from torch.utils.data import DistributedSampler
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg, total_steps = self.cfg, self.schedule.total_steps
        result, stop, window = _LoopResult(), False, _LogWindow()
        show = cfg.progress and self.dist_info.is_main
        progress = tqdm(total=total_steps, disable=not show, desc="train", unit="step")
        self.schedule.start = time.perf_counter()
        with logging_redirect_tqdm():
            for epoch in range(1, cfg.epochs + 1):
                if stop or result.steps >= total_steps or self.schedule.time_is_up:
                    break
                result.epochs_run = epoch
                if isinstance(self.sampler, DistributedSampler):
                    self.sampler.set_epoch(epoch)
                stop = self._epoch(epoch, result, window, progress)
                if not stop:
                    stop = self.validate(result.steps, epoch)
                window.start = time.perf_counter()
                if stop:
                    log.info(
                        "early stopping: no better validation F1 in %d evaluation(s)",
                        cfg.early_stopping_patience,
                    )
        progress.close()
        return result

    def _epoch(self, epoch: int, result: _LoopResult, window: _LogWindow, progress: tqdm[None]) -> bool:
        """One pass over the loader, or until steps or time run out; True when early stopping says so."""
        cfg, total_steps, stop = self.cfg, self.schedule.total_steps, False
        epoch_start = time.perf_counter()
        batches = len(self.loader)
        for batch_number, indices in enumerate(self.loader, start=1):
            loss_value = self._step(indices)
            result.steps += 1
            step = result.steps
            global_batch = len(indices) * self.dist_info.world_size
            result.examples_seen += global_batch
            self.history["step"].append(step)
            self.history["loss"].append(loss_value)
            window.add(loss_value, global_batch)
            progress.update(1)
            if step % cfg.log_every_steps == 0 or step == total_steps:
                self._log_window(step, window, progress)
            at_end = step >= total_steps or self.schedule.time_is_up
            if at_end and step < total_steps:
                log.info("time budget of %.0f min used up at step %d", cfg.time_budget_minutes, step)
            # ``run`` validates the epoch's last step when the epoch ends; not here too: a second evaluation
            # of the same weights would count as "no gain" and bring early stopping forward.
            periodic = cfg.eval_every_steps and step % cfg.eval_every_steps == 0
            if periodic and not at_end and batch_number < batches:
                result.train_seconds += time.perf_counter() - epoch_start
                stop = self.validate(step, epoch)
                epoch_start = time.perf_counter()
                window.start = time.perf_counter()
            if stop or at_end:
                break
        result.train_seconds += time.perf_counter() - epoch_start
        return stop

    def _step(self, indices: list[int]) -> float:
        """One optimizer step on the batch of rows ``indices``; returns its loss."""
        import torch

        features = self.train_set.features
        collated = collate([features[i] for i in indices], self.pad_id)
        batch = {k: v.to(self.device) for k, v in collated.items()}
        target = torch.as_tensor(self.train_set.targets[indices], device=self.device)
        logits = self.model(**batch).logits
        loss = self.loss_fn(logits.float(), target)
        loss.backward()
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.inner.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _log_window(self, step: int, window: _LogWindow, progress: tqdm[None]) -> None:
        elapsed = time.perf_counter() - window.start
        rate = window.examples / elapsed if elapsed > 0 else 0.0
        lr = float(self.scheduler.get_last_lr()[0])
        mean_loss = window.loss / max(1, window.steps)
        progress.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:.1f}")
        log.info(
            "step %d/%d: loss %.4f, lr %.2e, %.1f examples/s",
            step,
            self.schedule.total_steps,
            mean_loss,
            lr,
            rate,
        )
        self.tracker.log({"train/loss": mean_loss, "train/lr": lr, "train/examples_per_s": rate}, step=step)
        window.reset()


def _final_evaluation(
    *,
    inner: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: _Splits,
    validation_set: _Encoded,
    best: _Best,
    config: Config,
    device: torch.device,
    pad_id: int,
    binary_tuning: bool,
) -> tuple[RunMetrics, list[float] | None]:
    """Rank 0: the best weights on validation and test, with the tuned thresholds or decision threshold."""
    labels, problem_type = splits.prepared.labels, splits.prepared.problem_type
    test_set = _encode(tokenizer, splits.test, splits.prepared, config.model.max_length)

    def scores(encoded: _Encoded) -> Scores:
        return predict_scores(
            inner,
            features=encoded.features,
            problem_type=problem_type,
            batch_size=config.train.eval_batch_size,
            device=device,
            pad_token_id=pad_id,
        )

    validation_scores = best.validation_scores
    if validation_scores is None:  # set by the first evaluation; a fallback, not the usual path
        validation_scores = scores(validation_set)
    thresholds: list[float] | None = None
    decision_threshold: float | None = None
    if problem_type == "multi_label":
        thresholds = tune_thresholds(validation_set.targets, validation_scores)
    elif binary_tuning:
        decision_threshold = tune_decision_threshold(validation_set.targets, validation_scores)
        fold_decision_threshold(inner, decision_threshold)  # saved weights, export and service all apply it
        validation_scores = shift_binary_scores(validation_scores, decision_threshold)
        log.info("decision threshold (validation macro-F1): P(%s) >= %.2f", labels[1], decision_threshold)
    metrics: RunMetrics = {
        "validation": compute_metrics(
            problem_type, labels, validation_set.targets, validation_scores, thresholds
        ),
        "test": compute_metrics(problem_type, labels, test_set.targets, scores(test_set), thresholds),
        "decision_threshold": decision_threshold,
    }
    return metrics, thresholds


def _log_test_metrics(metrics: RunMetrics, baseline_metrics: BaselineMetrics) -> None:
    log.info(
        "test: F1 %.4f, accuracy %.4f, ROC-AUC %s (%d messages)",
        metrics["test"]["f1"],
        metrics["test"]["accuracy"],
        metrics["test"]["roc_auc"],
        metrics["test"]["n"],
    )
    for line in comparison_lines(metrics, baseline_metrics, "validation") + comparison_lines(
        metrics, baseline_metrics, "test"
    ):
        log.info("%s", line)


def write_run_dir(
    run_dir: Path,
    *,
    config: Config,
    prepared: Prepared,
    used: dict[str, list[ExampleRow]],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metrics: RunMetrics,
    thresholds: list[float] | None,
    history: History,
) -> None:
    """Everything ``core.run_dir`` lists (``docs/contracts.md`` section 2), written by rank 0."""
    labels = prepared.labels
    model.save_pretrained(run_dir / MODEL_DIR, safe_serialization=True)
    tokenizer.save_pretrained(run_dir / MODEL_DIR)
    train_counts = label_counts(used["train"], labels)
    data = {
        "source": prepared.source,
        "sha256": prepared.sha256,
        "dataset": prepared.dataset,
        "task": prepared.task,
        "problem_type": prepared.problem_type,
        "labels": labels,
        "split_sizes": {name: len(rows) for name, rows in used.items()},
        "prepared_split_sizes": prepared.split_sizes(),
        "split_generated": prepared.split_generated,
        "label_counts": {name: label_counts(rows, labels) for name, rows in used.items()},
        "label_prior": {label: count / max(1, len(used["train"])) for label, count in train_counts.items()},
        "dropped": prepared.dropped,
        "unused_label_columns": prepared.unused_label_columns,
        "thresholds": thresholds,
        "decision_threshold": metrics.get("decision_threshold"),
        "base_model": config.model.base,
        "base_model_path": resolve_base(config.model.base),
    }
    write_run_files(
        run_dir,
        config_yaml=config.to_yaml(),
        metrics=metrics,
        data=data,
        history=history,
        validation=used["validation"],
        test=used["test"],
    )
    plot_training_curves(history, run_dir / TRAINING_CURVES_FILE)
    plot_confusion_matrix(metrics["test"], run_dir / CONFUSION_MATRIX_FILE, title="test")
    if not all(math.isfinite(v) for v in history["loss"]):
        log.warning("the training loss was not finite at some step; check the learning rate")
