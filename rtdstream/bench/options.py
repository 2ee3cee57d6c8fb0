"""What a benchmark run does: the load, its length, the clients, and where results go."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rtdstream.errors import UserError

#: Above about a thousand readings a second per source, the simulator's strictly increasing
#: times run ahead of the wall clock and latencies stop meaning anything; 500 leaves room.
READINGS_PER_SOURCE = 500
#: Readings a plain run measures at least when no --duration is given: at --rate 1 the default
#: 30 s would leave 20 after warm-up, too few for a p99 (it would be the maximum of a handful).
MIN_MEASURED_READINGS = 200
#: The local MariaDB that scripts/ensure-mariadb sets up; the benchmark creates its own database there.
DEFAULT_SERVER_URL = "mysql+aiomysql://root@127.0.0.1:3306"


class BenchOptionError(UserError):
    """A benchmark option is out of range; the message names it."""

    exit_code = 2


@dataclass(frozen=True)
class RampOptions:
    """Raise the rate from ``start`` by ``factor`` per step of ``step`` seconds until a bound is crossed."""

    start: float = 5_000.0
    factor: float = 1.5
    max_rate: float = 100_000.0
    step: float = 20.0
    max_p99_ms: float = 500.0
    #: Worker group lag at a step's end, in seconds of input (messages / the rate they arrive at).
    max_lag_s: float = 10.0

    def rates(self) -> list[float]:
        rates, rate = [], self.start
        while rate <= self.max_rate * 1.0001:
            rates.append(round(rate))
            rate *= self.factor
        return rates


@dataclass(frozen=True)
class BenchOptions:
    rate: float = 5_000.0
    #: Simulated sensors; None: enough for at most READINGS_PER_SOURCE readings/s each, and 10 at
    #: least, but none slower than one reading a second (at --rate 1, one sensor, as the original).
    sources: int | None = None
    duration: float = 30.0
    warmup: float = 10.0
    clients: int = 10
    measuring: int = 2
    workers: int = 1
    #: None: a fresh ``rtd_bench_<time>`` database on the local MariaDB, dropped afterwards.
    database_url: str | None = None
    keep: bool = False
    output: Path = Path("bench-results")
    limits: bool = True
    #: Rows (readings) the raw limits are measured with; None: what the run emitted, at most 500,000.
    limit_rows: int | None = None
    drain_timeout: float = 180.0
    ramp: RampOptions | None = None
    soak: bool = False
    #: What writes rtd.readings: "bridge" (the simulator through the bridge, envelopes) or "kafka"
    #: (a producer of one-reading messages, as devices and other services write them).
    producer: str = "bridge"

    def sources_for(self, rate: float) -> int:
        """Sensors for ``rate``: ``--sources``, or enough that none is faster than READINGS_PER_SOURCE."""
        return self.sources or max(min(10, math.ceil(rate)), math.ceil(rate / READINGS_PER_SOURCE))

    @property
    def source_count(self) -> int:
        """Sensors of a plain run, or of a ramp's first step (each step has its own count)."""
        return self.sources_for(self.ramp.start if self.ramp else self.rate)

    def checked(self) -> BenchOptions:
        """These options, or :class:`BenchOptionError` naming the first bad one."""
        positive = {"--rate": self.rate, "--duration": self.duration, "--clients": self.clients,
                    "--workers": self.workers, "--drain-timeout": self.drain_timeout}
        for name, value in positive.items():
            if not value > 0:
                raise BenchOptionError(f"{name} must be positive, got {value:g}")
        if self.warmup < 0 or self.warmup >= self.duration:
            raise BenchOptionError(f"--warmup must be at least 0 and less than --duration ({self.duration:g}s)")
        if not 1 <= self.measuring <= self.clients:
            raise BenchOptionError(f"--measuring must be between 1 and --clients ({self.clients})")
        if self.sources is not None and self.sources < 1:
            raise BenchOptionError("--sources must be at least 1")
        if self.limit_rows is not None and self.limit_rows < 1000:
            raise BenchOptionError("--limit-rows must be at least 1000")
        if self.database_url is not None and not self.database_url.startswith("mysql+aiomysql://"):
            raise BenchOptionError("--database-url must be a mysql+aiomysql:// URL (the raw limit is MySQL's)")
        if self.ramp is not None:
            ramp = self.ramp
            if ramp.start <= 0 or ramp.factor <= 1 or ramp.max_rate < ramp.start:
                raise BenchOptionError("--ramp needs --rate > 0, --ramp-factor > 1 and --ramp-max >= --rate")
            if self.warmup >= ramp.step:
                raise BenchOptionError(f"--warmup must be less than --ramp-step ({ramp.step:g}s)")
        return self


#: What ``--soak`` changes unless given: issue 8's ten minutes at a moderate rate.
SOAK_DEFAULTS = {"rate": 20_000.0, "duration": 600.0, "warmup": 30.0}
PLAIN_DEFAULTS = {"rate": 5_000.0, "duration": 30.0, "warmup": 10.0}


def options_from_command_line(
    *, rate: float | None, duration: float | None, warmup: float | None, soak: bool, ramp: bool,
    ramp_factor: float, ramp_max: float, ramp_step: float, max_p99: float, max_lag: float, **rest: object,
) -> BenchOptions:
    """:class:`BenchOptions` from ``rtdstream bench``'s flags, with the soak defaults where they apply."""
    if soak and ramp:
        raise BenchOptionError("--soak and --ramp are different runs; choose one")
    defaults = SOAK_DEFAULTS if soak else PLAIN_DEFAULTS
    rate = defaults["rate"] if rate is None else rate
    warmup = (5.0 if ramp else defaults["warmup"]) if warmup is None else warmup
    if duration is None:
        duration = defaults["duration"]
        if not soak and not ramp and rate > 0:
            duration = max(duration, warmup + MIN_MEASURED_READINGS / rate)
    ramp_options = (
        RampOptions(start=rate, factor=ramp_factor, max_rate=ramp_max, step=ramp_step, max_p99_ms=max_p99,
                    max_lag_s=max_lag)
        if ramp else None
    )
    return BenchOptions(
        rate=rate,
        duration=duration,
        warmup=warmup,
        soak=soak,
        ramp=ramp_options,
        **rest,  # type: ignore[arg-type]
    ).checked()
