"""Lottery ticket rewinding: iterative magnitude pruning with weight rewinding."""
