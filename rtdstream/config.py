"""Settings, read from the environment (and ``.env``) and validated at start.

Settings come in small classes, one per concern (Kafka, topics, database,
windows, the worker's stages, the bridge, the web view's clients), composed
into one class per command: ``rtdstream sim`` reads ``PORT`` and the log
settings and nothing else, so a database URL it never uses cannot stop it.
:class:`Settings` composes them all: the worker's settings (``RtdApp.settings``).

A bad value must stop the process before it touches Kafka or the database,
with a message that names the variable, so :func:`load` turns pydantic's
errors into one :class:`SettingsError` that the CLI prints without a traceback.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rtdstream.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SOURCE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Every setting but ``PORT`` is read from ``RTD_`` and its name in capitals (pydantic-settings' env_prefix).
ENV_PREFIX = "RTD_"


def parse_duration(value: Any) -> float:
    """Seconds from ``"500ms"``, ``"2s"``, ``"1m"``, ``"1h"``, ``"7d"`` or a bare number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (examples: 500ms, 2s, 1m)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The label of a duration in window names: whole seconds as ``10s``, else ``500ms``."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


SettingsT = TypeVar("SettingsT", bound="CommonSettings")


class SettingsError(UserError):
    """A setting is missing or malformed; the message names the variable."""

    exit_code = 2


class CommonSettings(BaseSettings):
    """What every settings class shares: the ``RTD_`` prefix, the ``.env`` file, and the log settings.

    The prefix comes from pydantic-settings (``env_prefix``), so a field ``grace`` is read from
    ``RTD_GRACE``; only ``PORT`` (the platform convention) has an alias of its own.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    log_level: str = Field(
        "info",
        description="debug, info, warn or error.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one line per event, for people; json: one JSON object per line (time, level, "
        "logger, pid, message, and fields such as source, partition, offset) for log collectors.",
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.lower()
        if level == "warning":
            level = "warn"
        if level not in ("debug", "info", "warn", "error", "critical"):
            raise ValueError("must be debug, info, warn or error")
        return level


class LogSettings(CommonSettings):
    """Only the log settings: the embedded broker and ``rtdstream dev``'s parent need no more."""


class PortSettings(CommonSettings):
    """The HTTP port of a process that serves one (``PORT``, as platforms such as Heroku set it)."""

    port: int | None = Field(
        None, validation_alias="PORT", ge=1, le=65535,
        description="HTTP port of the process (default 4000 for web, 3000 for sim).",
    )


class KafkaSettings(CommonSettings):
    """How a Kafka client reaches the brokers: where they are, and the TLS and SASL settings."""

    broker: str | None = Field(
        None,
        description="Kafka bootstrap servers, kafka://host:port[,host:port]. "
        "Unset: `rtdstream dev` starts the embedded broker; other commands use kafka://localhost:9092.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client of every process connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT "
        "(a user and password, no TLS) or SASL_SSL (both).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN",
        description="The SASL mechanism with SASL_PLAINTEXT and SASL_SSL.",
    )
    kafka_username: str | None = Field(
        None, validate_default=True,
        description="The SASL user (required with SASL_PLAINTEXT and SASL_SSL).",
    )
    kafka_password: SecretStr | None = Field(
        None, validate_default=True,
        description="The SASL user's password (required with SASL_PLAINTEXT and SASL_SSL).",
    )
    kafka_ca_file: Path | None = Field(
        None,
        description="PEM file of the certificate authorities that sign the brokers' certificates (SSL, "
        "SASL_SSL). Unset: the system's.",
    )
    kafka_cert_file: Path | None = Field(
        None,
        description="PEM file of a client certificate, for brokers that require one (SSL, SASL_SSL).",
    )
    kafka_key_file: Path | None = Field(
        None,
        description="PEM file of the client certificate's private key, when RTD_KAFKA_CERT_FILE does not hold it.",
    )
    app_id: str = Field(
        "rtdstream",
        description="Faust application id: the consumer group and the prefix of table changelogs.",
    )

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            parts = urlsplit(server if "://" in server else f"kafka://{server}")
            if parts.scheme != "kafka" or not parts.hostname:
                raise ValueError(f"{server!r} is not kafka://host:port")
            try:
                _ = parts.port  # parsing it raises ValueError on a bad port
            except ValueError as exc:
                raise ValueError(f"{server!r} has a bad port") from exc
        return value

    @field_validator("kafka_username", "kafka_password")
    @classmethod
    def _required_with_sasl(cls, value: Any, info: ValidationInfo) -> Any:
        protocol = info.data.get("kafka_security_protocol", "PLAINTEXT")
        if protocol.startswith("SASL_") and not (value.get_secret_value() if isinstance(value, SecretStr) else value):
            raise ValueError(f"required with RTD_KAFKA_SECURITY_PROTOCOL={protocol}")
        return value

    @field_validator("kafka_ca_file", "kafka_cert_file", "kafka_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def broker_url(self) -> str:
        """The broker to use when none is embedded."""
        return self.broker or "kafka://localhost:9092"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,host:port`` as the Kafka clients take it."""
        return ",".join(server.split("://", 1)[-1] for server in self.broker_url.split(","))


class TopicSettings(KafkaSettings):
    """How the processes that write to Kafka (bridge, worker) create rtdstream's topics."""

    partitions: int = Field(
        8, ge=1, le=1024,
        description="Partitions of every rtdstream topic: the most workers that can share the load.",
    )
    replication_factor: int = Field(
        1, ge=1, le=32,
        description="Replicas of each rtdstream topic and of the worker's table changelog, when rtdstream "
        "creates them: 1 for a single broker, 3 on a cluster.",
    )
    min_insync_replicas: int | None = Field(
        None, ge=1,
        description="Replicas that must hold a write before the broker acknowledges it (every producer uses "
        "acks=all). Unset: one less than the replication factor, and at least 1 (2 of 3 on a cluster).",
    )
    topic_retention: Duration = Field(
        7 * 86400.0, gt=0,
        description="How long the broker keeps the messages of each rtdstream topic (retention.ms): how far "
        "back a new worker group or a rebuilt database can replay.",
    )

    @field_validator("min_insync_replicas")
    @classmethod
    def _check_insync_replicas(cls, value: int | None, info: ValidationInfo) -> int | None:
        replicas = info.data.get("replication_factor")
        if value is not None and replicas is not None and value > replicas:
            raise ValueError(f"cannot exceed RTD_REPLICATION_FACTOR ({replicas}): no write could ever be acknowledged")
        return value

    @property
    def insync_replicas(self) -> int:
        """``min.insync.replicas`` of the topics rtdstream creates."""
        return self.min_insync_replicas or max(1, self.replication_factor - 1)


class ProducerSettings(KafkaSettings):
    """How rtdstream's producers (bridge, worker, bench producer) send."""

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4",
        description="Compression of every message batch rtdstream's producers send (bridge, worker, bench "
        "producer); consumers decompress whatever they get. lz4 stored rtd.readings in a seventh of the "
        "bytes at no CPU cost measurable on 2 cores (README, Performance, Compression).",
    )


class ConsumerSettings(KafkaSettings):
    """How the worker and the web view consume rtdstream's topics."""

    fetch_max_wait: Duration = Field(
        0.02, gt=0,
        description="Longest a fetch of the worker or the web view waits at the broker for data. Apache Kafka "
        "answers as soon as data is there; a broker that holds every fetch for the full wait (the embedded one "
        "does) adds it to each stage's latency.",
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1024,
        description="Largest Kafka message the validation stage accepts.",
    )


class DatabaseSettings(CommonSettings):
    """Where readings and windows are stored, and how long to wait for the server at start."""

    database_url: str = Field(
        "sqlite+aiosqlite:///rtdstream.sqlite3",
        description="SQLAlchemy async URL: mysql+aiomysql://user:pass@host/db, or the embedded SQLite file.",
    )
    database_wait: Duration = Field(
        30.0,
        description="How long the worker waits at start for an unreachable database server "
        "before it exits; bad credentials or an unknown database fail at once.",
    )
    legacy_table: bool = Field(
        False,
        description="Also write readings to the original `Data` table layout.",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if scheme not in ("mysql+aiomysql", "sqlite+aiosqlite"):
            raise ValueError("must start with mysql+aiomysql:// or sqlite+aiosqlite://")
        query = parse_qs(urlsplit(value).query)
        for name in ("ssl_ca", "ssl_cert", "ssl_key"):
            for path in query.get(name, []):
                if not Path(path).is_file():
                    raise ValueError(f"{name}: no such file: {path}")
        return value


class WindowSettings(CommonSettings):
    """Which windows exist and when an idle one closes: the worker computes them, the web view lists them."""

    windows: CommaList = Field(
        ["1s", "10s", "60s"],
        description="Tumbling window sizes per source.",
    )
    hopping_window: str = Field(
        "60s/10s",
        description="Hopping window as size/step; empty disables it.",
    )
    idle_timeout: Duration = Field(
        10.0, gt=0,
        description="Wall-clock time after which an idle partition closes its open windows.",
    )

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        for size in value:
            if parse_duration(size) < 0.001:
                raise ValueError(f"window {size!r} must be at least 1ms")
        return value

    @field_validator("hopping_window")
    @classmethod
    def _check_hopping(cls, value: str) -> str:
        if value.strip():
            size, step = _hopping_parts(value)
            if step <= 0 or size <= 0 or size < step:
                raise ValueError("needs size/step with 0 < step <= size, e.g. 60s/10s")
            if round(size * 1000) % round(step * 1000):
                raise ValueError("size must be a multiple of step")
        return value.strip()

    @property
    def window_sizes(self) -> list[float]:
        return [parse_duration(size) for size in self.windows]

    @property
    def hopping(self) -> tuple[float, float] | None:
        """(size, step) in seconds, or None when disabled."""
        return _hopping_parts(self.hopping_window) if self.hopping_window else None


class StageSettings(CommonSettings):
    """The worker's own tuning: its group, its batches and its lateness rule. No other process reads these."""

    grace: Duration = Field(
        2.0,
        description="How far behind the newest reading of a partition a reading may arrive and still count.",
    )
    window_batch: int = Field(
        500, ge=1,
        description="Most rtd.validated messages the window agent applies and saves as one batch.",
    )
    window_within: Duration = Field(
        0.05, gt=0,
        description="Longest the window agent waits to fill a batch.",
    )
    partial_interval: Duration = Field(
        0.25, gt=0,
        description="Shortest interval between two rtd.partials updates (open window values) of a source.",
    )
    session_timeout: Duration = Field(
        10.0,
        description="Kafka consumer session timeout; a group forms after about half of it.",
    )
    producer_linger: Duration = Field(
        0.005,
        description="Longest the worker's producer waits to put more messages into one request; "
        "fewer, larger requests cost the worker and the broker less CPU.",
    )
    validate_batch: int = Field(
        5000, ge=1,
        description="Most rtd.readings messages the validation stage takes as one batch; each source's "
        "readings of a batch go on as one rtd.validated message.",
    )
    validate_within: Duration = Field(
        0.05, ge=0,
        description="Longest the validation stage waits, after the first message of a batch, for more "
        "(up to RTD_VALIDATE_BATCH; a fetch that brings a lone message is taken at once). The stages after "
        "it pay per message, and each source's readings of a batch leave as one; it adds up to this much to "
        "the latency to MySQL, not to the live path. 0 takes what one fetch brings.",
    )
    sink_batch: int = Field(
        200, ge=1,
        description="Most messages (envelopes) the sink writes in one transaction.",
    )
    sink_within: Duration = Field(
        0.02,
        description="Longest the sink waits to fill a batch. What arrived during a transaction is mostly "
        "there when it ends, so a longer wait only idles the sink when it is busiest (README, Performance).",
    )


class BridgeSettings(CommonSettings):
    """What the bridge reads and how it packs readings into envelopes."""

    sources: CommaList = Field(
        ["http://localhost:3000/stream"],
        description="Stream URLs the bridge reads, comma-separated; `name=url` sets the source id "
        "for records that carry none (default: the URL's host:port).",
    )
    bridge_batch: int = Field(
        500, ge=1,
        description="Most readings in one envelope the bridge produces.",
    )
    bridge_linger: Duration = Field(
        0.05,
        description="Shortest interval between two envelopes of one source: a source that sent none in the "
        "last interval ships at once, a busier one's readings wait up to this long and go together, so the "
        "message rate stays at most sources / linger (README, Performance).",
    )
    max_line_bytes: int = Field(
        65536, ge=64,
        description="Longest line the bridge accepts from a stream; longer ones go to rtd.dlq.",
    )
    resume: bool = Field(
        True,
        description="Reconnect to streams with ?session=&since= so a resumable source (rtdstream sim) "
        "replays what the bridge had read but not delivered when it died; servers that do not know "
        "these parameters ignore them.",
    )
    read_timeout: Duration = Field(
        30.0,
        description="A stream that sends nothing for this long is treated as stalled and reopened.",
    )

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_source(entry)
        return value

    @property
    def source_urls(self) -> list[tuple[str, str]]:
        """(source id, url) for each configured stream."""
        return [parse_source(entry) for entry in self.sources]


class LiveSettings(PortSettings):
    """The web view's clients: who may connect, what they are sent and how fast, and when one is cut off."""

    cors_origins: CommaList = Field(
        ["http://localhost:5173"],
        description="Origins allowed to open Socket.IO and API connections; `*` allows any.",
    )
    auth_token: str | None = Field(
        None,
        description="When set, Socket.IO and the REST API refuse clients without this token.",
    )
    live_max_rate: float = Field(
        10.0, gt=0,
        description="Most per-reading live events (newData, reading, partial) per source per second; "
        "faster sources are coalesced to their latest value (the `readings` batch event carries all).",
    )
    live_input: Literal["readings", "validated"] = Field(
        "readings",
        description="Where the web view takes live readings from: readings (rtd.readings, validated by the web "
        "view itself: one broker hop, the lowest latency) or validated (the worker's rtd.validated: a hop and "
        "the worker's batches more, and less CPU in each web process at high rates).",
    )
    newdata_source: str | None = Field(
        None,
        description="The source whose readings `newData` carries (the original system had one sensor, and its "
        "frontend one gauge). Unset: the smallest source id the web view knows, stored or live.",
    )
    live_batch_interval: Duration = Field(
        0.02,
        description="Shortest interval between two `readings` batches of a source: a source whose last batch "
        "left longer ago gets its readings out at once, a busier one waits up to this long.",
    )
    live_history: int = Field(
        120, ge=0, le=10_000,
        description="Recent readings per source the web view keeps for the acknowledgement of `subscribe`.",
    )
    client_queue: int = Field(
        1000, ge=1,
        description="Packets a Socket.IO client may have waiting; beyond it, live events for it are dropped.",
    )
    slow_client_timeout: Duration = Field(
        10.0,
        description="A client whose queue stays full this long is disconnected.",
    )
    client_message_rate: float = Field(
        50.0, gt=0,
        description="Socket.IO messages (subscribe, unsubscribe ...) a client may send per second, sustained; "
        "beyond it (and RTD_CLIENT_MESSAGE_BURST) they are dropped, and a client that keeps sending is disconnected.",
    )
    client_message_burst: int = Field(
        200, ge=1,
        description="Socket.IO messages a client may send at once (a dashboard subscribing to every source), "
        "and how many more dropped ones end its connection.",
    )

    @field_validator("auth_token")
    @classmethod
    def _blank_token_is_unset(cls, value: str | None) -> str | None:
        # `RTD_AUTH_TOKEN=` (as .env templates write it) means no token, for Socket.IO and REST alike.
        return value or None

    @field_validator("newdata_source")
    @classmethod
    def _check_newdata_source(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not is_valid_source_id(value):
            raise ValueError(f"{value!r} is not a source id")
        return value


# What each command reads: a command validates these and no others (README, Configuration).


class SimCommandSettings(PortSettings):
    """``rtdstream sim``: its port and its log."""


class BridgeCommandSettings(TopicSettings, ProducerSettings, BridgeSettings):
    """``rtdstream bridge``: the streams it reads and the topics it writes."""


class StatusCommandSettings(KafkaSettings):
    """``rtdstream status``: the brokers and the worker group it reports on."""


class DevCommandSettings(KafkaSettings):
    """``rtdstream dev``'s own process: whether to embed a broker; each process it starts checks its own."""


class DatabaseCommandSettings(DatabaseSettings):
    """``rtdstream db upgrade``: the database alone."""


class WebSettings(TopicSettings, ConsumerSettings, DatabaseSettings, WindowSettings, LiveSettings):
    """``rtdstream web``: the topics it follows (and creates), the stored history, the windows it lists, its clients."""


class Settings(StageSettings, BridgeCommandSettings, WebSettings):
    """Everything: the worker's settings (``RtdApp.settings``), and ``rtdstream bench``'s and the tests'."""


def _hopping_parts(value: str) -> tuple[float, float]:
    size, sep, step = value.partition("/")
    if not sep:
        raise ValueError("needs size/step, e.g. 60s/10s")
    return parse_duration(size), parse_duration(step)


def parse_source(entry: str) -> tuple[str, str]:
    """``name=url`` or ``url`` -> (source id, url); the id defaults to host:port."""
    name, sep, url = entry.partition("=")
    if not sep or "://" in name:
        name, url = "", entry
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    source = name or f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if not _SOURCE_ID.match(source):
        raise ValueError(f"source id {source!r} may only use letters, digits and . _ : - (1-64)")
    return source, url


def is_valid_source_id(source: str) -> bool:
    """Whether ``source`` may name a source; remembered for the last few thousand ids of at most 64 characters."""
    return len(source) <= 64 and _is_valid_short_id(source)


@lru_cache(maxsize=4096)
def _is_valid_short_id(source: str) -> bool:
    # Cached: the bridge asks once per reading, and a source sends many (the regex took 7% of its time).
    return bool(_SOURCE_ID.match(source))


def env_name(kind: type[CommonSettings], field_name: str) -> str:
    """The environment variable of a field: its alias (``PORT``), else ``RTD_`` and its name in capitals."""
    alias = kind.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if alias else f"{ENV_PREFIX}{field_name.upper()}"


def env_names(kind: type[CommonSettings] | None = None) -> set[str]:
    """Every variable ``kind`` reads (by default, every variable of :class:`Settings`)."""
    kind = kind or Settings
    return {env_name(kind, field) for field in kind.model_fields}


def load(kind: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read and validate the settings of ``kind``, raising :class:`SettingsError` naming each bad variable.

    ``overrides`` take field names (``grace=``) or variable names (``RTD_GRACE=``), as tests write them.
    """
    values = {_field_name(kind, key): value for key, value in overrides.items()}
    try:
        return kind(**values)
    except ValidationError as exc:
        raise SettingsError("invalid setting " + "; ".join(_problems(kind, exc))) from None


def settings_or_exit(kind: type[SettingsT]) -> SettingsT:
    """A process's own settings; a bad one ends it with one line naming the variable (exit code 2)."""
    try:
        return load(kind)
    except SettingsError as exc:
        print(f"rtdstream: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None


def load_settings(**overrides: Any) -> Settings:
    """Every setting (the worker's, and what tests and the benchmark build pipelines from)."""
    return load(Settings, **overrides)


def _field_name(kind: type[CommonSettings], key: str) -> str:
    if key in kind.model_fields or not key.upper().startswith(ENV_PREFIX):
        return key
    return key[len(ENV_PREFIX):].lower()


def _problems(kind: type[CommonSettings], exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        if name in kind.model_fields:
            name = env_name(kind, name)
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, (str, int, float)) else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}{shown}: {message}")
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    return load_settings()
