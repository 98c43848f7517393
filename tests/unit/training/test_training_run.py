"""The training loop on the tiny BERT: the run directory contract, learning, determinism, early stopping,
multi-label, the Kaggle config, class weights, the CLI and W&B offline tracking."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from core.jsonl import read_jsonl
from core.run_dir import RUN_DIR_FILES
from tests.support import REPO_ROOT
from training.__main__ import main as training_main
from training.config import Config, load_config
from training.train import class_weights, run

CONFIGS = REPO_ROOT / "training" / "configs"
SINGLE_LABEL_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}


def _load(run_dir: Path, name: str) -> Any:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """One small run shared by the tests that only read its run directory."""
    from tests.support.data import write_figure_eight_csv

    root = tmp_path_factory.mktemp("trained")
    csv_path = write_figure_eight_csv(root / "messages.csv")
    config_path = root / "tiny.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "runs_dir": str(root / "runs"),
                "data": {
                    "source": "file",
                    "path": str(csv_path),
                    "name": "figure_eight",
                    "cache_dir": str(root / "cache"),
                    "label_column": "related",
                    "label_map": {"0": "not_related", "1": "related"},
                    "drop_label_values": ["2"],
                },
                "task": {"name": "related", "problem_type": "single_label"},
                "model": {"base": str(tiny_bert_dir), "max_length": 32},
                "train": {
                    "epochs": 4,
                    "batch_size": 8,
                    "learning_rate": 5e-3,
                    "warmup_ratio": 0.1,
                    "early_stopping_patience": 0,
                    "progress": False,
                    "log_every_steps": 4,
                },
            }
        ),
        encoding="utf-8",
    )
    run_dir = run(load_config(config_path))
    assert run_dir is not None
    return run_dir


def test_run_directory_holds_every_contract_file(trained: Path) -> None:
    for name in RUN_DIR_FILES:
        assert (trained / name).is_file(), name
    for plot in ("training_curves.png", "confusion_matrix.png"):
        assert (trained / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_text = (trained / "train.log").read_text(encoding="utf-8")
    assert "examples/s" in log_text
    assert "test: F1" in log_text
    latest = trained.parent / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == trained.resolve()
    assert trained.name.endswith("-tiny")


def test_saved_model_reloads_with_its_labels(trained: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(trained / "model")
    assert model.config.id2label == {0: "not_related", 1: "related"}
    assert model.config.problem_type == "single_label_classification"
    assert AutoTokenizer.from_pretrained(trained / "model").is_fast


def test_resolved_config_is_saved_and_loads_back(trained: Path) -> None:
    saved = yaml.safe_load((trained / "config.yaml").read_text(encoding="utf-8"))
    assert saved["task"]["problem_type"] == "single_label"
    assert saved["model"]["max_length"] == 32
    assert saved["train"]["epochs"] == 4
    assert load_config(trained / "config.yaml").train.learning_rate == pytest.approx(5e-3)


def test_metrics_follow_the_contract(trained: Path) -> None:
    metrics = _load(trained, "metrics.json")
    for split in ("validation", "test"):
        assert set(metrics[split]) >= SINGLE_LABEL_KEYS
        matrix = np.array(metrics[split]["confusion_matrix"])
        assert matrix.shape == (2, 2)
        assert matrix.sum() == 16
    training = metrics["training"]
    for key in ("examples_per_second", "train_seconds", "epochs_run", "best_epoch", "best_validation_f1"):
        assert key in training
    assert training["epochs_run"] == 4
    assert training["examples_per_second"] > 0
    # The synthetic classes use disjoint words: even the tiny model separates them after a few epochs.
    assert metrics["test"]["f1"] >= 0.9
    assert metrics["test"]["positive_label"] == "related"


def test_a_few_training_steps_lower_the_loss(trained: Path) -> None:
    history = _load(trained, "history.json")
    losses = history["loss"]
    assert len(losses) == 4 * 6  # 48 training rows, batches of 8, 4 epochs
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])


def test_data_fingerprint(trained: Path) -> None:
    data = _load(trained, "data.json")
    assert len(data["sha256"]) == 64
    assert data["labels"] == ["not_related", "related"]
    assert data["problem_type"] == "single_label"
    assert data["split_sizes"] == {"train": 48, "validation": 16, "test": 16}
    assert data["label_counts"]["train"] == {"not_related": 18, "related": 30}
    assert data["label_prior"] == pytest.approx({"not_related": 18 / 48, "related": 30 / 48})
    assert data["dropped"] == {"related=2": 2}
    assert data["thresholds"] is None
    evaluated = [record for _, record in read_jsonl(trained / "eval" / "test.jsonl")]
    assert len(evaluated) == 16
    assert set(evaluated[0]) == {"text", "label"}


def test_same_seed_same_weights(related_config: Path, tmp_path: Path) -> None:
    first = run(load_config(related_config, ["train.max_steps=3"]), tmp_path / "a")
    second = run(load_config(related_config, ["train.max_steps=3"]), tmp_path / "b")
    assert first is not None
    assert second is not None
    one, two = _load(first, "metrics.json"), _load(second, "metrics.json")
    assert one["training"]["parameter_sha256_per_rank"] == two["training"]["parameter_sha256_per_rank"]
    assert one["test"]["roc_auc"] == two["test"]["roc_auc"]
    assert one["training"]["steps"] == 3
    # --run-dir places the run where asked; `latest` is updated next to it.
    assert (tmp_path / "latest").resolve() == second.resolve()


def test_early_stopping_keeps_the_best_epoch(related_config: Path, tmp_path: Path) -> None:
    # A learning rate this small cannot change validation F1: the first evaluation stays the best.
    config = load_config(
        related_config, ["train.epochs=6", "train.learning_rate=1e-12", "train.early_stopping_patience=2"]
    )
    run_dir = run(config, tmp_path / "run")
    assert run_dir is not None
    training = _load(run_dir, "metrics.json")["training"]
    assert training["epochs_run"] == 3
    assert training["best_epoch"] == 1


def test_each_step_is_validated_once(related_config: Path, tmp_path: Path) -> None:
    """A periodic evaluation that falls on an epoch's last step is the epoch's evaluation, not a second one
    (a second evaluation of the same weights would count as "no gain" for early stopping)."""
    config = load_config(related_config, ["train.epochs=2", "train.eval_every_steps=3"])
    run_dir = run(config, tmp_path / "run")
    assert run_dir is not None
    assert _load(run_dir, "metrics.json")["training"]["steps"] == 12  # 48 rows, batch 8, 2 epochs
    assert _load(run_dir, "history.json")["eval_step"] == [3, 6, 9, 12]


def test_multi_label_run(
    write_config: Callable[..., Path], figure_eight_csv: Path, tiny_bert_multilabel_dir: Path, tmp_path: Path
) -> None:
    labels = ["request", "water", "food", "shelter"]
    config = load_config(
        write_config(
            data={"source": "file", "path": str(figure_eight_csv), "label_columns": labels},
            task={"name": "needs", "problem_type": "multi_label"},
            model={"base": str(tiny_bert_multilabel_dir), "max_length": 32},
            train={"epochs": 2, "class_weights": "balanced"},
        )
    )
    run_dir = run(config, tmp_path / "run")
    assert run_dir is not None
    metrics = _load(run_dir, "metrics.json")
    test = metrics["test"]
    assert {"micro_f1", "macro_f1", "per_label", "roc_auc", "confusion_matrix", "accuracy"} <= set(test)
    assert test["f1"] == test["micro_f1"]
    assert set(test["per_label"]) == set(labels)
    assert set(test["per_label"]["water"]) == {"precision", "recall", "f1", "support"}
    data = _load(run_dir, "data.json")
    assert data["problem_type"] == "multi_label"
    assert len(data["thresholds"]) == len(labels)
    assert all(0.0 < t < 1.0 for t in data["thresholds"])
    assert test["thresholds"] == data["thresholds"]
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(run_dir / "model")
    assert saved.problem_type == "multi_label_classification"
    assert list(saved.id2label.values()) == labels
    assert set(next(read_jsonl(run_dir / "eval" / "test.jsonl"))[1]) == {"text", "labels"}


def test_kaggle_config_on_a_small_csv(tiny_kaggle_config: Callable[..., Config], tmp_path: Path) -> None:
    config = tiny_kaggle_config("train.epochs=1", "train.class_weights=balanced")
    run_dir = run(config)
    assert run_dir is not None
    assert run_dir.parent == tmp_path / "runs"
    assert run_dir.name.endswith("-kaggle_tweets")
    data = _load(run_dir, "data.json")
    assert data["labels"] == ["not_disaster", "disaster"]
    assert data["split_generated"] is True
    assert data["split_sizes"] == {"train": 64, "validation": 8, "test": 8}
    assert (tmp_path / "cache" / "prepared" / "kaggle_tweets-disaster" / "test.jsonl").is_file()


def test_class_weights_balance_the_labels() -> None:
    single = class_weights(np.array([0, 0, 0, 1]), "single_label", 2)
    assert single.tolist() == pytest.approx([4 / 6, 2.0])
    multi = class_weights(np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=np.float32), "multi_label", 2)
    assert multi.tolist() == pytest.approx([3.0, 3.0])


def test_cli_trains_and_prints_the_run_dir(
    related_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--config", str(related_config), "--run-dir", str(tmp_path / "cli"), "train.max_steps=2"]
    assert training_main([*arguments, "link_latest=false"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "metrics.json").is_file()
    assert not (tmp_path / "latest").exists()  # an experiment that must not replace the served run


def test_cli_reports_config_and_data_errors(
    related_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert training_main(["--config", str(related_config), "train.batch_size=0"]) == 2
    assert "field 'train.batch_size': must be at least 1" in capsys.readouterr().err
    assert training_main(["--config", str(related_config), "data.text_column=body"]) == 2
    assert "column 'body': missing column" in capsys.readouterr().err
    assert training_main(["--config", str(related_config), f"model.base={tmp_path / 'none'}"]) == 2
    assert "no checkpoint there (no config.json)" in capsys.readouterr().err


def test_wandb_tracker_logs_offline(
    related_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = run(load_config(related_config, ["tracker=wandb", "train.max_steps=2"]), tmp_path / "run")
    assert run_dir is not None
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb"))
