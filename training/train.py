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

import copy
import hashlib
import logging
import math
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

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
from training.baseline import comparison_lines, fit_baseline
from training.config import Config
from training.data import Prepared, label_counts, load_prepared, subset
from training.evaluate import (
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

log = logging.getLogger("training")


def seed_everything(seed: int, deterministic: bool) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(choice: str, dist_info: distributed.DistInfo) -> Any:
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def encode_labels(rows: list[dict[str, Any]], labels: list[str], problem_type: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    if problem_type == "multi_label":
        target = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for r, row in enumerate(rows):
            for label in row["labels"]:
                if label in index:
                    target[r, index[label]] = 1.0
        return target
    return np.array([index[row["label"]] for row in rows], dtype=np.int64)


def tokenize(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids per text, truncated to ``max_length``, not padded (batches pad to their longest)."""
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]


def class_weights(targets: np.ndarray, problem_type: str, n_labels: int) -> np.ndarray:
    """Inverse-frequency weights (single-label) or negative/positive ratios (multi-label), in [0.1, 50]."""
    if problem_type == "multi_label":
        positives = targets.sum(axis=0)
        weights = (len(targets) - positives) / np.maximum(positives, 1)
    else:
        counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
        weights = len(targets) / (n_labels * np.maximum(counts, 1))
    return np.clip(weights, 0.1, 50.0).astype(np.float32)


def parameter_digest(model: Any) -> str:
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

    def __iter__(self) -> Any:
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
        self.run: Any = None
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

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self, summary: dict[str, Any], images: list[Path]) -> None:
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


def _run(config: Config, run_dir: Path | None, dist_info: distributed.DistInfo) -> Path | None:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    cfg, main = config.train, dist_info.is_main
    if not main:
        logging.getLogger().setLevel(logging.WARNING)  # rank-0-only logging
        logging.getLogger("training").setLevel(logging.WARNING)
    device = pick_device(cfg.device, dist_info)
    if device.type == "cpu":
        threads = cfg.num_threads or max(1, usable_cores() // dist_info.local_world_size)
        torch.set_num_threads(threads)
    seed_everything(cfg.seed, cfg.deterministic)

    if main:
        run_dir = Path(run_dir) if run_dir else new_run_dir(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        _attach_log_file(run_dir)
        log.info("run directory: %s", run_dir)
    log.info(
        "device %s, %d torch threads, %d process(es)%s",
        device,
        torch.get_num_threads(),
        dist_info.world_size,
        f" ({dist_info.backend})" if dist_info.enabled else "",
    )

    # Data: rank 0 fetches and prepares (cache), the others read the cache it wrote.
    prepared: Prepared | None = load_prepared(config) if main else None
    distributed.barrier(dist_info)
    if prepared is None:
        prepared = load_prepared(config)
    labels, problem_type = prepared.labels, prepared.problem_type
    train_rows = subset(prepared.splits["train"], config.data.train_subset, cfg.seed)
    validation_rows = subset(prepared.splits["validation"], config.data.validation_subset, cfg.seed)
    test_rows = subset(prepared.splits["test"], config.data.test_subset, cfg.seed)
    log.info(
        "data: train %d (of %d), validation %d, test %d; labels %s",
        len(train_rows),
        len(prepared.splits["train"]),
        len(validation_rows),
        len(test_rows),
        labels,
    )

    binary_tuning = cfg.tune_decision_threshold and problem_type == "single_label" and len(labels) == 2
    baseline_metrics: dict[str, Any] | None = None
    if main:
        # The classical baseline on the very rows the model sees; seconds, so always part of the run.
        used_rows = {"train": train_rows, "validation": validation_rows, "test": test_rows}
        baseline_metrics = fit_baseline(
            problem_type=problem_type,
            labels=labels,
            texts={name: [row["text"] for row in rows] for name, rows in used_rows.items()},
            targets={name: encode_labels(rows, labels, problem_type) for name, rows in used_rows.items()},
            seed=cfg.seed,
            tune_decision=binary_tuning,
        ).metrics
        log.info(
            "baseline test: F1 %.4f, macro-F1 %.4f, accuracy %.4f, ROC-AUC %s",
            baseline_metrics["test"]["f1"],
            baseline_metrics["test"]["macro_f1"],
            baseline_metrics["test"]["accuracy"],
            baseline_metrics["test"]["roc_auc"],
        )

    tokenizer = load_tokenizer(config.model.base)
    pad_id = tokenizer.pad_token_id or 0
    train_features = tokenize(tokenizer, train_rows, config.model.max_length)
    validation_features = tokenize(tokenizer, validation_rows, config.model.max_length)
    train_targets = encode_labels(train_rows, labels, problem_type)
    validation_targets = encode_labels(validation_rows, labels, problem_type)

    torch.manual_seed(cfg.seed)  # the new head is initialised from this seed on every rank
    model = load_model(config.model.base, labels, problem_type)
    if problem_type == "multi_label":
        init_head_bias_to_prior(model, train_targets.mean(axis=0))
    model = model.to(device)
    model.train()
    inner = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset: Any = list(range(len(train_features)))  # indices; collate looks the features up
    if dist_info.enabled:
        sampler: Any = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=cfg.seed
        )
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.group_by_length and not dist_info.enabled:
        lengths = [len(features["input_ids"]) for features in train_features]
        batches = LengthGroupedBatches(lengths, cfg.batch_size, cfg.seed)
        loader: Any = DataLoader(dataset, batch_sampler=batches, collate_fn=list)
    else:
        if cfg.group_by_length:
            log.warning("train.group_by_length is ignored under torchrun (each rank samples its own share)")
        loader = DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=list, drop_last=False
        )

    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = int(cfg.warmup_ratio * total_steps)

    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight", "norm.weight")
    head_ids = {id(p) for p in classifier_head(inner).parameters()}
    head_lr = cfg.head_learning_rate or cfg.learning_rate
    groups = []
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
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)

    budget_seconds = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
    clock = {"start": time.perf_counter(), "fraction": 0.0}

    def lr_factor(step: int) -> float:
        """Linear warm-up, then linear decay over the steps or the time budget, whichever is further."""
        if budget_seconds is not None:
            elapsed = (time.perf_counter() - clock["start"]) / budget_seconds if main else None
            # Every rank must follow rank 0's clock, or the replicas would disagree on when to stop.
            shared = distributed.broadcast(dist_info, elapsed) if dist_info.enabled else elapsed
            clock["fraction"] = float(shared if shared is not None else 0.0)
            if clock["fraction"] > step / max(1, total_steps):
                fraction = min(1.0, clock["fraction"])
                if fraction < cfg.warmup_ratio:
                    return max(fraction, 1e-3) / cfg.warmup_ratio
                return max(0.0, (1.0 - fraction) / max(1e-9, 1.0 - cfg.warmup_ratio))
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    weights = None
    if cfg.class_weights == "balanced":
        weights = torch.tensor(class_weights(train_targets, problem_type, len(labels)), device=device)
        log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
    if problem_type == "multi_label":
        loss_fn: Any = torch.nn.BCEWithLogitsLoss(pos_weight=weights)
    else:
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    tracker = Tracker(config.tracker, config, run_dir if main else None)
    history: dict[str, list[Any]] = {"step": [], "loss": [], "eval_step": [], "val_f1": [], "val_loss": []}
    best_f1, best_step, best_epoch, evals_without_gain = -1.0, 0, 0, 0
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in inner.state_dict().items()})
    thresholds: list[float] | None = None
    best_validation_scores: np.ndarray | None = None

    def evaluate_validation(step: int, epoch: int) -> bool:
        """Rank 0 evaluates; every rank learns whether to stop and whether this is the new best."""
        nonlocal best_f1, best_step, best_epoch, evals_without_gain, best_state, best_validation_scores
        decision = None
        if main:
            scores = predict_scores(
                inner,
                features=validation_features,
                problem_type=problem_type,
                batch_size=cfg.eval_batch_size,
                device=device,
                pad_token_id=pad_id,
            )
            tuned = tune_thresholds(validation_targets, scores) if problem_type == "multi_label" else None
            metrics = compute_metrics(problem_type, labels, validation_targets, scores, tuned)
            improved = metrics["f1"] > best_f1
            history["eval_step"].append(step)
            history["val_f1"].append(metrics["f1"])
            history["val_loss"].append(metrics["loss"])
            tracker.log({"validation/f1": metrics["f1"], "validation/loss": metrics["loss"]}, step=step)
            log.info(
                "step %d (epoch %d): validation F1 %.4f, accuracy %.4f, loss %.4f%s",
                step,
                epoch,
                metrics["f1"],
                metrics["accuracy"],
                metrics["loss"],
                " (best so far)" if improved else "",
            )
            decision = improved
            if improved:
                best_validation_scores = scores  # the final report reuses them: same weights, same texts
        improved = distributed.broadcast(dist_info, decision)
        if improved:
            best_f1 = history["val_f1"][-1] if main else best_f1
            best_step, best_epoch, evals_without_gain = step, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
        else:
            evals_without_gain += 1
        patience = cfg.early_stopping_patience
        return patience > 0 and evals_without_gain >= patience

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    step, examples_seen, train_seconds, epochs_run, stop = 0, 0, 0.0, 0, False
    window_loss, window_steps, window_examples, window_start = 0.0, 0, 0, time.perf_counter()
    progress = tqdm(total=total_steps, disable=not (cfg.progress and main), desc="train", unit="step")
    log.info(
        "training: %d epoch(s) x %d steps (%d total, %d warm-up), batch %d x %d process(es), lr %g",
        cfg.epochs,
        steps_per_epoch,
        total_steps,
        warmup_steps,
        cfg.batch_size,
        dist_info.world_size,
        cfg.learning_rate,
    )
    clock["start"] = time.perf_counter()
    with logging_redirect_tqdm():
        for epoch in range(1, cfg.epochs + 1):
            if stop or step >= total_steps or clock["fraction"] >= 1.0:
                break
            epochs_run = epoch
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            epoch_start = time.perf_counter()
            for indices in loader:
                batch = {
                    k: v.to(device) for k, v in collate([train_features[i] for i in indices], pad_id).items()
                }
                target = torch.as_tensor(train_targets[indices], device=device)
                logits = model(**batch).logits
                loss = loss_fn(logits.float(), target)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(inner.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                global_batch = len(indices) * dist_info.world_size
                examples_seen += global_batch
                loss_value = float(loss.detach())
                history["step"].append(step)
                history["loss"].append(loss_value)
                window_loss += loss_value
                window_steps += 1
                window_examples += global_batch
                progress.update(1)
                if step % cfg.log_every_steps == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    rate = window_examples / elapsed if elapsed > 0 else 0.0
                    lr = scheduler.get_last_lr()[0]
                    mean_loss = window_loss / max(1, window_steps)
                    progress.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:.1f}")
                    log.info(
                        "step %d/%d: loss %.4f, lr %.2e, %.1f examples/s",
                        step,
                        total_steps,
                        mean_loss,
                        lr,
                        rate,
                    )
                    tracker.log(
                        {"train/loss": mean_loss, "train/lr": lr, "train/examples_per_s": rate}, step=step
                    )
                    window_loss, window_steps, window_examples = 0.0, 0, 0
                    window_start = time.perf_counter()
                at_end = step >= total_steps or clock["fraction"] >= 1.0
                if at_end and step < total_steps:
                    log.info("time budget of %.0f min used up at step %d", cfg.time_budget_minutes, step)
                if cfg.eval_every_steps and step % cfg.eval_every_steps == 0 and not at_end:
                    train_seconds += time.perf_counter() - epoch_start
                    stop = evaluate_validation(step, epoch)
                    epoch_start = time.perf_counter()
                    window_start = time.perf_counter()
                    if stop:
                        break
                if at_end:
                    break
            train_seconds += time.perf_counter() - epoch_start
            if not stop:
                stop = evaluate_validation(step, epoch)
            window_start = time.perf_counter()
            if stop:
                log.info(
                    "early stopping: no better validation F1 in %d evaluation(s)", cfg.early_stopping_patience
                )
    progress.close()

    inner.load_state_dict(best_state)
    digests = distributed.gather(dist_info, parameter_digest(inner))
    examples_per_second = examples_seen / train_seconds if train_seconds > 0 else 0.0
    log.info(
        "trained %d steps, %d examples in %.1f s: %.1f examples/s; best validation F1 %.4f at step %d",
        step,
        examples_seen,
        train_seconds,
        examples_per_second,
        best_f1,
        best_step,
    )
    if not main:
        return None
    assert run_dir is not None

    # Final evaluation of the best weights on validation and test (rank 0).
    eval_start = time.perf_counter()
    test_features = tokenize(tokenizer, test_rows, config.model.max_length)
    test_targets = encode_labels(test_rows, labels, problem_type)
    validation_scores = best_validation_scores
    if validation_scores is None:  # set by the first evaluation; a fallback, not the usual path
        validation_scores = predict_scores(
            inner,
            features=validation_features,
            problem_type=problem_type,
            batch_size=cfg.eval_batch_size,
            device=device,
            pad_token_id=pad_id,
        )
    decision_threshold: float | None = None
    if problem_type == "multi_label":
        thresholds = tune_thresholds(validation_targets, validation_scores)
    elif binary_tuning:
        decision_threshold = tune_decision_threshold(validation_targets, validation_scores)
        fold_decision_threshold(inner, decision_threshold)  # saved weights, export and service all apply it
        validation_scores = shift_binary_scores(validation_scores, decision_threshold)
        log.info("decision threshold (validation macro-F1): P(%s) >= %.2f", labels[1], decision_threshold)
    test_scores = predict_scores(
        inner,
        features=test_features,
        problem_type=problem_type,
        batch_size=cfg.eval_batch_size,
        device=device,
        pad_token_id=pad_id,
    )
    metrics: dict[str, Any] = {
        "validation": compute_metrics(
            problem_type, labels, validation_targets, validation_scores, thresholds
        ),
        "test": compute_metrics(problem_type, labels, test_targets, test_scores, thresholds),
        "decision_threshold": decision_threshold,
        "baseline": baseline_metrics,
        "training": {
            "examples_per_second": examples_per_second,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - eval_start,
            "epochs_run": epochs_run,
            "steps": step,
            "examples_seen": examples_seen,
            "best_epoch": best_epoch,
            "best_step": best_step,
            "best_validation_f1": best_f1,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "world_size": dist_info.world_size,
            "backend": dist_info.backend,
            "parameter_sha256_per_rank": digests,
            "replicas_in_sync": len(set(digests)) == 1,
            "torch_version": torch.__version__,
        },
    }
    log.info(
        "test: F1 %.4f, accuracy %.4f, ROC-AUC %s (%d messages)",
        metrics["test"]["f1"],
        metrics["test"]["accuracy"],
        metrics["test"]["roc_auc"],
        metrics["test"]["n"],
    )
    assert baseline_metrics is not None
    for line in comparison_lines(metrics, baseline_metrics, "validation") + comparison_lines(
        metrics, baseline_metrics, "test"
    ):
        log.info("%s", line)
    write_run_dir(
        run_dir,
        config=config,
        prepared=prepared,
        used={"train": train_rows, "validation": validation_rows, "test": test_rows},
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


def write_run_dir(
    run_dir: Path,
    *,
    config: Config,
    prepared: Prepared,
    used: dict[str, list[dict[str, Any]]],
    model: Any,
    tokenizer: Any,
    metrics: dict[str, Any],
    thresholds: list[float] | None,
    history: dict[str, list[Any]],
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
