"""docker/: the compose file against the Compose Specification, and what a user checks before `up`.

No Docker engine runs here, so the file is validated with the official
Compose Specification schema as check-jsonschema ships it (the same schema
`docker compose config` applies), then read as compose would read it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dockerfile_parse import DockerfileParser
from ruamel.yaml import YAML

from rtdstream.config import env_names, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
RTDSTREAM_SERVICES = {"sim", "bridge", "worker", "web"}
#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def load_compose(text: str | None = None) -> dict:
    """The file as compose reads it, YAML anchors and merge keys resolved (variables not yet)."""
    return YAML(typ="safe", pure=True).load(text if text is not None else COMPOSE.read_text())


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${...} substitution: defaults apply, a required variable that is missing fails."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name", "op", "arg")
        value = variables.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not value or op == "-" and value is None:
            return arg
        return value or ""

    return _VARIABLE.sub(substitute, value)


def example_variables() -> dict[str, str]:
    """docker/.env.example as a user fills it in: the passwords set, the rest left as shipped."""
    variables = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {**variables, "MYSQL_PASSWORD": "s3cret-app", "MYSQL_ROOT_PASSWORD": "s3cret-root"}


def environment(service: dict, variables: dict[str, str]) -> dict[str, str]:
    """A service's environment after interpolation; pass-through entries (no value) only when set."""
    resolved = {}
    for name, value in service.get("environment", {}).items():
        if value is None:
            if variables.get(name):
                resolved[name] = variables[name]
        else:
            resolved[name] = interpolate(str(value), variables)
    return resolved


def role(service: dict) -> str:
    """The rtdstream command a service runs (global options such as -q come first)."""
    return next(arg for arg in service["command"] if not arg.startswith("-"))


def setting_names() -> set[str]:
    return env_names()


def test_compose_file_is_valid_under_the_compose_specification() -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text(
        COMPOSE.read_text().replace("    healthcheck:\n      disable: true", "    healthcheck: yes")
    )
    result = check_jsonschema(broken)
    assert result.returncode == 1 and "healthcheck" in result.stdout


def test_compose_runs_every_process_on_kafka_in_kraft_mode_and_mysql_8() -> None:
    services = load_compose()["services"]
    assert set(services) == {"kafka", "mysql"} | RTDSTREAM_SERVICES

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert not any("ZOOKEEPER" in name for name in env) and "zookeeper" not in services
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])  # a base64 UUID, as kafka-storage requires
    assert re.match(r"mysql:8(\.|$)", services["mysql"]["image"])

    for name in RTDSTREAM_SERVICES:
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert role(services[name]) == name
        assert services[name]["stop_grace_period"]  # time to commit and leave the group on SIGTERM


def test_every_service_declares_its_healthcheck_and_the_web_ports_match() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} would inherit the image's web view probe"
        assert check.get("disable") or check["test"][0] in ("CMD", "CMD-SHELL"), name
    assert [name for name, s in services.items() if s["healthcheck"].get("disable")] == ["bridge"]

    worker, web = services["worker"], services["web"]
    web_port = worker["command"][worker["command"].index("--web-port") + 1]
    assert f"127.0.0.1:{web_port}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{web['environment']['PORT']}/healthz" in " ".join(web["healthcheck"]["test"])
    assert web["ports"] == [f"${{RTD_WEB_PORT:-4000}}:{web['environment']['PORT']}"]
    for dependency in ("kafka", "mysql"):
        for name in ("bridge", "worker", "web"):
            assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"


def test_the_worker_scales_no_fixed_name_port_or_hostname() -> None:
    worker = load_compose()["services"]["worker"]
    assert not {"container_name", "ports", "hostname"} & set(worker)


def test_service_environments_are_rtdstream_settings_that_load_and_point_at_the_services() -> None:
    services = load_compose()["services"]
    variables = example_variables()
    kafka, mysql = services["kafka"]["environment"], services["mysql"]["environment"]
    for name in RTDSTREAM_SERVICES - {"sim"}:
        env = environment(services[name], variables)
        assert set(env) - {"PORT"} <= setting_names(), f"{name}: unknown settings"
        settings = load_settings(**env)  # each value valid, as the process checks it at start
        assert f"PLAINTEXT://{settings.bootstrap_servers}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
        url = urlsplit(settings.database_url)
        assert (url.hostname, url.username, url.password, url.path) == (
            "mysql",
            mysql["MYSQL_USER"],
            variables["MYSQL_PASSWORD"],
            f"/{mysql['MYSQL_DATABASE']}",
        )
        assert settings.auth_token is None  # RTD_AUTH_TOKEN is passed through only when set
        assert interpolate(kafka["KAFKA_NUM_PARTITIONS"], variables) == str(settings.partitions)
    assert environment(services["bridge"], variables)["RTD_SOURCES"] == "http://sim:3000/stream"
    assert services["sim"]["command"][services["sim"]["command"].index("--port") + 1] == "3000"


def test_compose_refuses_to_start_without_database_passwords() -> None:
    services = load_compose()["services"]
    with pytest.raises(KeyError, match="MYSQL_PASSWORD"):
        environment(services["worker"], {})
    with pytest.raises(KeyError, match="MYSQL_ROOT_PASSWORD"):
        environment(services["mysql"], {"MYSQL_PASSWORD": "x", "MYSQL_ROOT_PASSWORD": ""})


def dockerfile_stages() -> list[list[dict]]:
    stages: list[list[dict]] = []
    for instruction in DockerfileParser(path=str(DOCKERFILE)).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def test_dockerfile_runs_slim_as_a_non_root_user_with_a_healthcheck() -> None:
    *builders, final = dockerfile_stages()
    commands = [(i["instruction"], i["value"]) for i in final]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", commands[0][1])
    users = [value for instruction, value in commands if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [instruction for instruction, _ in commands].index("USER") < len(
        commands
    ) - 3  # before the command
    assert any(instruction == "HEALTHCHECK" and "/healthz" in value for instruction, value in commands)
    assert ("ENTRYPOINT", '["rtdstream"]') in commands
    # The dashboard's libraries are vendored in the package: no Node stage, no npm.
    assert not any(stage[0]["value"].startswith("node:") for stage in builders)
    assert not any("npm" in i["value"] for stage in dockerfile_stages() for i in stage)


def test_dockerfile_installs_dependencies_in_a_layer_before_the_code() -> None:
    final = [(i["instruction"], i["value"]) for i in dockerfile_stages()[-1]]
    dependencies = next(
        n for n, (ins, value) in enumerate(final) if ins == "RUN" and "requirements.txt" in value
    )
    code = next(n for n, (ins, value) in enumerate(final) if ins == "RUN" and "/wheels" in value)
    copied_before = [value for ins, value in final[:dependencies] if ins == "COPY"]
    assert copied_before == ["pyproject.toml /tmp/pyproject.toml"] and dependencies < code


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    ignored = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for instruction in DockerfileParser(path=str(DOCKERFILE)).structure:
        if instruction["instruction"] != "COPY" or instruction["value"].startswith("--from"):
            continue
        *sources, _target = instruction["value"].split()
        for source in sources:
            assert (ROOT / source).exists(), f"{source} is missing: docker build would fail"
            assert not any(
                Path(source).match(pattern) or source.split("/")[0] == pattern for pattern in ignored
            ), f"{source} is excluded by .dockerignore"
