"""The only places that touch other libraries' private internals: one module per library.

Each function names the private attribute it uses and the version it was checked against;
``tests/test_compat.py`` fails loudly when an installed version no longer has it.
"""
