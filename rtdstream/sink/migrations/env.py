"""Alembic environment of the sink: runs on the connection that :mod:`rtdstream.sink.migrate` hands in.

There is no alembic.ini: the caller builds the configuration in code and puts
an open (synchronous facade of an async) connection into
``config.attributes["connection"]``, so migrations run in the caller's
transaction and under its lock.
"""

from alembic import context

from rtdstream.sink.schema import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    # SQLite changes tables by copying them; batch mode does that for ALTERs.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
