"""Settings: defaults, parsing, and a bad value stopping a command that uses it, with the variable's name."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from rtdstream.broker import free_port
from rtdstream.config import SettingsError, format_duration, load_settings, parse_duration
from rtdstream.sink.database import mysql_tls


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Only what a test sets: no RTD_* from the caller's shell, no .env of the working directory."""
    for name in list(os.environ):
        if name.startswith("RTD_") or name == "PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_documented_contract() -> None:
    settings = load_settings()
    assert settings.source_urls == [("localhost:3000", "http://localhost:3000/stream")]
    assert settings.cors_origins == ["http://localhost:5173"]
    assert [format_duration(s) for s in settings.window_sizes] == ["1s", "10s", "60s"]
    assert settings.hopping == (60.0, 10.0)
    assert settings.grace == 2.0
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.auth_token is None


def test_values_are_parsed_from_their_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTD_BROKER", "kafka://k1:9092,kafka://k2:9092")
    monkeypatch.setenv("RTD_SOURCES", "north=http://10.0.0.5:3000/stream, http://sim:3000/stream")
    monkeypatch.setenv("RTD_WINDOWS", "500ms,5s")
    monkeypatch.setenv("RTD_GRACE", "1500ms")
    monkeypatch.setenv("RTD_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = load_settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.source_urls == [("north", "http://10.0.0.5:3000/stream"), ("sim:3000", "http://sim:3000/stream")]
    assert [format_duration(s) for s in settings.window_sizes] == ["500ms", "5s"]
    assert settings.grace == 1.5
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path) -> None:
    (tmp_path / ".env").write_text("RTD_GRACE=3s\nRTD_AUTH_TOKEN=s3cret\n")
    settings = load_settings()
    assert (settings.grace, settings.auth_token) == (3.0, "s3cret")


@pytest.mark.parametrize(("name", "value", "words"), [
    ("RTD_BROKER", "http://broker:9092", "kafka://host:port"),
    ("RTD_DATABASE_URL", "postgres://x/y", "mysql+aiomysql"),
    ("RTD_SOURCES", "ftp://x/stream", "http(s) URL"),
    ("RTD_WINDOWS", "1s,ten", "not a duration"),
    ("RTD_HOPPING_WINDOW", "60s/7s", "multiple of step"),
    ("RTD_GRACE", "-2s", "not a duration"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("RTD_PARTITIONS", "0", "greater than or equal to 1"),
    ("RTD_LEGACY_TABLE", "perhaps", "boolean"),
    ("RTD_NEWDATA_SOURCE", "two words", "not a source id"),
])
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"{name}={value!r}" in str(raised.value)
    assert words in str(raised.value)


@pytest.mark.parametrize(("command", "name", "value", "message"), [
    (["sim"], "PORT", "x", "Input should be a valid integer, unable to parse string as an integer"),
    (["bridge"], "RTD_SOURCES", "ftp://x/stream", "'ftp://x/stream' is not an http(s) URL"),
    (["db", "upgrade"], "RTD_DATABASE_URL", "bogus://x", "must start with mysql+aiomysql:// or sqlite+aiosqlite://"),
    (["worker", "-l", "info"], "RTD_GRACE", "soon", "'soon' is not a duration (examples: 500ms, 2s, 1m)"),
])
def test_a_command_stops_at_start_with_one_line_naming_a_setting_it_uses(
    command: list[str], name: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtdstream", *command], env={**os.environ, name: value},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"rtdstream: invalid setting {name}={value!r}: {message}"


def test_the_simulator_ignores_settings_it_does_not_use_and_never_imports_faust() -> None:
    port = free_port()
    env = {**os.environ, "RTD_DATABASE_URL": "bogus://x", "RTD_GRACE": "soon", "RTD_SOURCES": "ftp://x"}
    sim = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "rtdstream", "sim", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = _first_line(f"http://127.0.0.1:{port}/stream", sim)
    finally:
        sim.terminate()
        _, stderr = sim.communicate(timeout=30)
    assert json.loads(line).keys() == {"time", "speed"}
    assert sim.returncode == 0
    imported = re.findall(r"^import time:.*\|\s*(\S+)$", stderr, flags=re.MULTILINE)
    assert "rtdstream.sim.server" in imported
    assert not [module for module in imported if module.split(".")[0] in ("faust", "mode", "sqlalchemy")]


def test_commands_that_do_not_run_faust_do_not_import_it() -> None:
    modules = [
        "rtdstream.cli", "rtdstream.sim.server", "rtdstream.broker", "rtdstream.dev", "rtdstream.bridge.service",
        "rtdstream.status", "rtdstream.sink.migrate", "rtdstream.web.server",
    ]
    check = f"import sys; [__import__(m) for m in {modules!r}]; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True)
    assert "'faust'" not in result.stdout


def _first_line(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first line ``url`` streams, once the process listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.readline().decode()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("2m") == 120 and parse_duration(3) == 3.0
    assert format_duration(0.25) == "250ms" and format_duration(60) == "60s"


def test_a_mysql_url_s_tls_parameters_become_the_driver_s_ssl_context(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "ca.key"),
         "-out", str(ca), "-days", "1", "-subj", "/CN=db-ca"],
        check=True, capture_output=True, timeout=60,
    )
    url, tls = mysql_tls(sa.make_url(f"mysql+aiomysql://u:p@db/rtdb?ssl_ca={ca}&ssl_check_hostname=false&charset=utf8mb4"))
    assert url.render_as_string(hide_password=False) == "mysql+aiomysql://u:p@db/rtdb?charset=utf8mb4"
    context = tls["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is False
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "db-ca"),),)]
    assert mysql_tls(sa.make_url("mysql+aiomysql://u:p@db/rtdb")) == (sa.make_url("mysql+aiomysql://u:p@db/rtdb"), {})
    with pytest.raises(SettingsError, match="RTD_DATABASE_URL=.*ssl_ca: no such file: /nope.pem"):
        load_settings(database_url="mysql+aiomysql://u:p@db/rtdb?ssl_ca=/nope.pem")


def test_sasl_needs_a_user_and_password_and_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RTD_KAFKA_USERNAME: required with RTD_KAFKA_SECURITY_PROTOCOL=SASL_SSL"):
        load_settings(kafka_security_protocol="SASL_SSL", kafka_password="x")
    with pytest.raises(SettingsError, match="RTD_KAFKA_PASSWORD: required with"):
        load_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="alice")
    with pytest.raises(SettingsError, match="RTD_KAFKA_CA_FILE='/nope.pem': no such file"):
        load_settings(kafka_security_protocol="SSL", kafka_ca_file="/nope.pem")
    with pytest.raises(SettingsError, match="RTD_KAFKA_SASL_MECHANISM"):
        load_settings(kafka_sasl_mechanism="GSSAPI")
    plain = load_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="alice", kafka_password="s3cret")
    assert "s3cret" not in repr(plain)
