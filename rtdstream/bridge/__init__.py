"""The bridge: HTTP reading streams in, envelopes on ``rtd.readings`` out."""
