"""RTD_COMPRESSION on Apache Kafka: every producer of rtdstream compresses, and nothing is lost.

The proof is the broker's own log: Kafka's ``DumpLogSegments`` prints each stored record batch's
codec. A producer that ignored the setting would leave batches marked ``none`` there, while the
readings would still flow, which is why the readings' arrival alone proves nothing about it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from rtdstream import topics
from tests.support.apache_kafka import KAFKA_LIBS, ApacheKafka
from tests.support.mariadb import MariaDB
from tests.support.pipeline import Pipeline, stored_exactly_once
from tests.support.processes import ProcessGroup, until


def stored_codecs(data: Path, topic: str) -> set[str]:
    """The codecs of the record batches the broker stored for ``topic`` (every partition)."""
    segments = sorted(str(log) for log in data.glob(f"**/{topic}-*/*.log"))
    if not segments:
        return set()
    dump = subprocess.run(
        ["java", "-cp", f"{KAFKA_LIBS}/*", "kafka.tools.DumpLogSegments", "--files", ",".join(segments)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return set(re.findall(r"compresscodec: (\w+)", dump.stdout))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_with_zstd_the_bridge_and_the_worker_store_compressed_batches_and_lose_nothing(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    env = {
        **rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_DATABASE_URL": mysql_url, "RTD_COMPRESSION": "zstd",
        # Windows close within the test: rtd.windows (the Faust producer's topic) gets batches too.
        "RTD_WINDOWS": "1s", "RTD_GRACE": "200ms",
    }
    pipeline = Pipeline(processes, env, rate=500, sources=4)
    await pipeline.start_worker()
    await pipeline.start_sim()
    pipeline.start_bridge()
    emitted = await pipeline.end_stream(after=4.0)

    await stored_exactly_once(mariadb, database, emitted, pipeline.env, workers=pipeline.workers)
    # The bridge wrote rtd.readings, the validation stage rtd.validated, Faust's producer rtd.windows.
    for topic in (topics.READINGS, topics.VALIDATED):
        assert stored_codecs(apache_kafka.data, topic) == {"zstd"}, topic
    await until(lambda: stored_codecs(apache_kafka.data, topics.WINDOWS) == {"zstd"}, timeout=30,
                what="closed windows in rtd.windows, every batch zstd")
