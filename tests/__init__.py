"""The ltstudy test suite (a package so tests can import helpers from conftest)."""
