"""Final window aggregates.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from rtdstream.sink.schema import MYSQL_TABLE, BigId, UtcMillis

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "window_aggregates",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("window", sa.String(32), nullable=False, comment='label, e.g. "10s" or "60s/10s"'),
        sa.Column("size_ms", sa.BigInteger, nullable=False),
        sa.Column("step_ms", sa.BigInteger, nullable=False),
        sa.Column("start", sa.BigInteger, nullable=False, comment="epoch milliseconds, inclusive"),
        sa.Column("end", sa.BigInteger, nullable=False, comment="epoch milliseconds, exclusive"),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("min", sa.Double, nullable=False),
        sa.Column("max", sa.Double, nullable=False),
        sa.Column("sum", sa.Double, nullable=False),
        sa.Column("mean", sa.Double, nullable=False),
        sa.Column("first_time", sa.BigInteger, nullable=False),
        sa.Column("last_time", sa.BigInteger, nullable=False),
        sa.Column("last_speed", sa.Double, nullable=False),
        sa.Column("updated_at", UtcMillis, nullable=False),
        sa.UniqueConstraint("source", "window", "start", name="uq_window_aggregates_source_window_start"),
        **MYSQL_TABLE,
    )
    op.create_index("ix_window_aggregates_source_start", "window_aggregates", ["source", "start"])


def downgrade() -> None:
    raise NotImplementedError("rtdstream never drops stored aggregates; restore a backup instead")
