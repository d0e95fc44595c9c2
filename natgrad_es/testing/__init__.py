"""Test helpers shipped with the package: ``FactorTests`` checks any Factor against dense.

Import ``natgrad_es.testing.factor_tests`` from a pytest module (needs pytest and hypothesis).
"""
