"""Window definitions and window state of the worker (installed as ``rtdstream.tables``)."""
