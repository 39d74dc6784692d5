"""Tickets: mask type and files, magnitude pruning with a per-layer floor, the enforcer, rewind points, schedule checks."""
