"""``python -m rtdstream``: the same as the ``rtdstream`` command."""

from rtdstream.cli import main

main()
