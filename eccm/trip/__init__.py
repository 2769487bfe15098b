"""Trips: the trip computer, per-minute statistics, the trouble-code timeline, summaries."""
