"""PrAC data selection: forgetting statistics, prune disagreement, early-bird stopping, the sets and their index files."""
