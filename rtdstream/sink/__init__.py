"""The MySQL/SQLite sink: schema, migrations, batched idempotent writes, history queries."""
