"""deploy/prometheus.py: the rendered native config targets the given service, keeps the rules, is valid."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import prometheus


def jobs(config: dict) -> dict[str, dict]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_render_points_the_textclf_job_at_the_target() -> None:
    config = prometheus.render_config("127.0.0.1:18000", self_target="127.0.0.1:19090")
    assert jobs(config)["textclf"]["static_configs"] == [{"targets": ["127.0.0.1:18000"]}]
    assert jobs(config)["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]
    # Intervals untouched unless asked.
    assert config["global"]["scrape_interval"] == "5s"


def test_render_overrides_intervals_and_keeps_the_timeout_valid() -> None:
    config = prometheus.render_config("127.0.0.1:18000", scrape_interval="1s")
    assert config["global"]["scrape_interval"] == "1s"
    assert config["global"]["scrape_timeout"] == "1s"
    assert config["global"]["evaluation_interval"] == "1s"
    config = prometheus.render_config("127.0.0.1:18000", scrape_interval="2s", evaluation_interval="10s")
    assert config["global"]["evaluation_interval"] == "10s"


def test_render_makes_rule_paths_absolute() -> None:
    (pattern,) = prometheus.render_config("127.0.0.1:18000")["rule_files"]
    assert Path(pattern).is_absolute()
    assert sorted(Path(p).name for p in glob.glob(pattern)) == ["alerts.yml", "recording.yml"]


def test_rendered_config_is_valid_anywhere(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian's `prometheus` package): run `make system-deps`")
    path = prometheus.write_config(tmp_path / "prometheus.yml", "127.0.0.1:18000", scrape_interval="1s")
    assert yaml.safe_load(path.read_text())["global"]["scrape_timeout"] == "1s"
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_render_refuses_a_config_without_the_textclf_job(tmp_path: Path) -> None:
    source = tmp_path / "other.yml"
    source.write_text(yaml.safe_dump({"scrape_configs": [{"job_name": "api"}]}))
    with pytest.raises(ValueError, match="textclf"):
        prometheus.render_config("127.0.0.1:18000", source=source)


def test_missing_binary_says_how_to_install_it() -> None:
    with (
        pytest.raises(FileNotFoundError, match="make system-deps"),
        prometheus.run_prometheus("127.0.0.1:18000", binary="prometheus-not-installed"),
    ):
        pass
