"""The newest rtd.readings origin written per input partition and source.

The validation stage gathers input messages into one batch per source, and
the batches of several sources interleave in one partition: a single origin per
input partition (``sink_origins``) no longer tells what was written. Rows of
``sink_origins`` written before this revision stay as a floor for every source.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from rtdstream.sink.schema import MYSQL_TABLE, UtcMillis

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sink_source_origins",
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin_partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("origin_offset", sa.BigInteger, nullable=False),
        sa.Column("origin_index", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcMillis, nullable=False),
        comment="newest rtd.readings origin written, per partition of the consumed topic, input partition and source",
        **MYSQL_TABLE,
    )


def downgrade() -> None:
    op.drop_table("sink_source_origins")
