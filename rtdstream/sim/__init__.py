"""A simulator byte-compatible with the original ``rtd-sim`` (DESIGN.md section 2)."""
