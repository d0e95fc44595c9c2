"""Bridges to the ecosystem: nevergrad optimizers, executors for parallel evaluation.

Each module imports its optional dependency itself; importing this package needs nothing extra.
"""
