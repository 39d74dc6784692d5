"""Ticket analysis on finished run directories: sanity checks, linear mode connectivity, multi-run reports."""
