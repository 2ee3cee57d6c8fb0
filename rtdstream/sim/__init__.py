"""A simulator byte-compatible with the original ``rtd-sim`` (README, Compatibility)."""
