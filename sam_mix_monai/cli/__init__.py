"""The ``sam-mix`` command line. Each sub-command lives in its own module."""
