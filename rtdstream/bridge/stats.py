"""What the bridge read, produced and rejected, for its periodic log line and tests."""

from __future__ import annotations

from dataclasses import dataclass

from rtdstream.topics import DLQ


@dataclass
class BridgeStats:
    readings_read: int = 0
    readings_delivered: int = 0
    envelopes_delivered: int = 0
    dead_letters_delivered: int = 0
    bad_lines: int = 0
    delivery_retries: int = 0
    #: Messages the broker refused for good (the bridge stops at the first).
    delivery_failures: int = 0
    #: Envelopes the topic refused as too large, sent again in halves.
    envelopes_split: int = 0
    backpressure_waits: int = 0

    def on_delivered(self, topic: str, readings: int) -> None:
        """Count a message the broker acknowledged (and only then)."""
        if topic == DLQ:
            self.dead_letters_delivered += 1
        else:
            self.envelopes_delivered += 1
            self.readings_delivered += readings

    def summary(self) -> str:
        return " ".join(f"{name}={value}" for name, value in vars(self).items())
