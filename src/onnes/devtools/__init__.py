"""Checks of the code base itself, run by the tests (``python -m onnes.devtools.imports``)."""
