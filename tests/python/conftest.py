"""Shared pytest setup. The tests exercise the installed package (pip install .),
never the source tree, so that the compiled module is the one users get."""
