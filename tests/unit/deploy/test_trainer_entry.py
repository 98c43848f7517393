"""The one-shot trainer (compose `trainer`, first step of `make stack`): skips when a bundle exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import trainer


class Recorder:
    """Stands in for subprocess: records each command; `export` writes the manifest like the real exporter."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        module = argv[2]
        if module == self.fail_at:
            return 3
        if module == "export":
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "manifest.json").write_text("{}", encoding="utf-8")
        return 0


def test_existing_bundle_means_nothing_runs(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    runner = Recorder()
    assert trainer.ensure_bundle("training/configs/quick.yaml", tmp_path, runner=runner) == 0
    assert runner.calls == []


def test_missing_bundle_runs_data_train_export_in_order(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "disaster-related"
    runner = Recorder()
    assert trainer.ensure_bundle("cfg.yaml", model_dir, run_dir="runs/latest", runner=runner) == 0
    assert [call[1:3] for call in runner.calls] == [
        ["-m", "training.data"],
        ["-m", "training"],
        ["-m", "export"],
    ]
    assert runner.calls[0][-2:] == ["--config", "cfg.yaml"]
    assert runner.calls[1][-2:] == ["--config", "cfg.yaml"]
    export = runner.calls[2]
    assert export[export.index("--run-dir") + 1] == "runs/latest"
    assert export[export.index("--out") + 1] == str(model_dir)
    assert trainer.bundle_exists(model_dir)


def test_a_failing_step_stops_the_pipeline_with_its_exit_code(tmp_path: Path) -> None:
    runner = Recorder(fail_at="training")
    assert trainer.ensure_bundle("cfg.yaml", tmp_path / "m", runner=runner) == 3
    assert [call[2] for call in runner.calls] == ["training.data", "training"]


def test_export_that_writes_no_manifest_is_a_failure(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    assert trainer.ensure_bundle("cfg.yaml", tmp_path / "m", runner=runner) == 1
    assert len(calls) == 3


def test_cli_reads_config_and_model_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_CONFIG", "training/configs/full.yaml")
    monkeypatch.setenv("TEXTCLF_MODEL_DIR", "/models/x")
    args = trainer.parse_args([])
    assert args.config == "training/configs/full.yaml"
    assert args.model_dir == Path("/models/x")
    assert trainer.parse_args(["--config", "a.yaml"]).config == "a.yaml"


def test_export_args_reach_the_export_step_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTCLF_EXPORT_ARGS", "--no-bench --parity-sample '500'")
    args = trainer.parse_args(["--model-dir", str(tmp_path / "m")])
    runner = Recorder()
    monkeypatch.setattr(trainer, "_run", runner)
    assert trainer.main(["--model-dir", str(tmp_path / "m")]) == 0
    assert args.export_args == "--no-bench --parity-sample '500'"
    data, train, export = runner.calls
    assert export[-3:] == ["--no-bench", "--parity-sample", "500"]
    assert "--no-bench" not in data + train


def test_no_export_args_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEXTCLF_EXPORT_ARGS", raising=False)
    steps = trainer.pipeline_steps("c.yaml", Path("m"), "r")
    assert steps[-1].argv[-1] == "--force"
