"""Supervised compression: SGLP layer pruning, the KD family and the filter-pruning family."""
