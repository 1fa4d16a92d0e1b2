"""The image and the compose stack keep the properties operations rely on
(no Docker engine here to build or run them: `docker-compose config` and the
Dockerfile's text are what can be checked)."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from tests.nginx_conf import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Containers that only run a static binary without a shell to probe with.
_NO_HEALTHCHECK = {"redis-exporter"}
# Jobs that run once and exit (the photos' bucket made): waited for to finish.
_ONE_SHOT = {"minio-init"}


def _compose() -> dict:
    result = subprocess.run(
        ["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _stages() -> list[tuple[str, str]]:
    """(image, stage name) of each FROM, with ARG defaults substituted."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.MULTILINE))
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.MULTILINE)
    return [(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image), name) for image, name in stages]


def test_base_images_are_pinned_by_version() -> None:
    stages = _stages()
    assert {name for _, name in stages} >= {"web", "build", "gateway", "app"}
    for image, name in stages:
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+(\.\d+)?", tag), (name, image)
    assert stages[-1][1] == "app"  # the default target


def test_the_app_runs_unprivileged_as_pid_1_with_a_readiness_check() -> None:
    app = DOCKERFILE[DOCKERFILE.index(" AS app\n"):]
    user = re.findall(r"^USER (\S+)$", app, re.MULTILINE)
    assert user and user[-1] not in {"root", "0"}
    (cmd,) = re.findall(r"^CMD (.+)$", app, re.MULTILINE)
    assert json.loads(cmd)[:2] == ["unimatch", "serve"]  # exec form: no shell in between
    assert "/readyz" in re.search(r"^HEALTHCHECK .*\n.*$", app, re.MULTILINE).group(0)
    assert "--require-hashes" in DOCKERFILE and "requirements.lock" in DOCKERFILE


def test_every_service_restarts_is_checked_and_waits_for_healthy_dependencies() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "postgres", "redis", "ray-head", "ray-worker", "app", "nginx",
        "prometheus", "alertmanager", "grafana", "mailpit", "redis-exporter", "minio",
        "minio-init",
    }
    for name, service in services.items():
        if name in _ONE_SHOT:
            assert service.get("restart") == "no", name
        else:
            assert service.get("restart") in {"unless-stopped", "always"}, name
        if name not in _NO_HEALTHCHECK | _ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), name
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = ("service_started" if dependency in _NO_HEALTHCHECK
                        else "service_completed_successfully" if dependency in _ONE_SHOT
                        else "service_healthy")
            assert condition["condition"] == expected, (name, dependency)
        if "command" in service and service["command"][0] == "sh":
            raise AssertionError(f"{name}: a shell as PID 1 keeps signals from the process")


def test_ray_runs_with_token_auth_and_fixed_ports_and_the_app_joins_it() -> None:
    services = _compose()["services"]
    for name in ("ray-head", "ray-worker", "app"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN_PATH"].startswith("/run/secrets/"), name
    for name in ("ray-head", "ray-worker"):
        command = services[name]["command"]
        assert command[:3] == ["ray", "start", "--block"] or command[:4] == [
            "ray", "start", "--head", "--block"], command
        for flag in ("--node-manager-port", "--object-manager-port", "--min-worker-port",
                     "--max-worker-port", "--metrics-export-port"):
            assert any(part.startswith(flag + "=") for part in command), (name, flag)
    assert services["app"]["environment"]["RAY_ADDRESS"] == "ray-head:6380"
    assert services["app"]["environment"]["SMTP_HOST"] == "mailpit"


def test_photos_live_in_the_bucket_every_platform_process_shares() -> None:
    services = _compose()["services"]
    init = " ".join(services["minio-init"]["command"])
    assert "mc mb --ignore-existing store/unimatch-media" in init
    for name in ("ray-head", "ray-worker", "app"):
        env = services[name]["environment"]
        assert env["MEDIA_STORE"] == "s3", name
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["S3_BUCKET"] == "unimatch-media", name
        assert env["S3_ACCESS_KEY_ID"] and env["S3_SECRET_ACCESS_KEY"], name
        assert "minio-init" in services[name]["depends_on"], name
        # No machine's folder holds photos: a node on any machine serves them.
        assert not any("media" in str(volume) for volume in services[name].get("volumes", []))


def test_state_lives_in_named_volumes_and_grafana_is_provisioned() -> None:
    config = _compose()
    services = config["services"]
    assert set(config["volumes"]) >= {"pgdata", "appdata", "miniodata", "promdata", "amdata",
                                      "grafanadata"}
    mounts = {name: [v["target"] if isinstance(v, dict) else v.split(":")[1]
                     for v in service.get("volumes", [])]
              for name, service in services.items()}
    assert "/var/lib/postgresql/data" in mounts["postgres"]
    assert "/data" in mounts["minio"]
    assert "/prometheus" in mounts["prometheus"]
    assert "/alertmanager" in mounts["alertmanager"]
    assert {"/var/lib/grafana", "/etc/grafana/provisioning"} <= set(mounts["grafana"])
