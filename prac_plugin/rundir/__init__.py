"""The run folder: its paths, records and summaries, the lock, and atomic file writes."""
