"""Readings, and the sink's record of what it has written (Kafka offsets and reading origins).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from rtdstream.sink.schema import MYSQL_TABLE, BigId, UtcMillis, utc_now_default

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "readings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False, comment="epoch milliseconds"),
        sa.Column("speed", sa.Double, nullable=False),
        sa.Column("ingested_at", UtcMillis, nullable=False, server_default=utc_now_default(dialect)),
        sa.UniqueConstraint("source", "time", name="uq_readings_source_time"),
        **MYSQL_TABLE,
    )
    op.create_table(
        "sink_offsets",
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("offset", sa.BigInteger, nullable=False, comment="last offset written"),
        sa.Column("updated_at", UtcMillis, nullable=False),
        **MYSQL_TABLE,
    )
    op.create_table(
        "sink_origins",
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin_partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin_offset", sa.BigInteger, nullable=False),
        sa.Column("origin_index", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcMillis, nullable=False),
        comment="newest rtd.readings origin written, per partition of the consumed topic",
        **MYSQL_TABLE,
    )


def downgrade() -> None:
    raise NotImplementedError("rtdstream never drops stored readings; restore a backup instead")
