"""Runnable examples: ``python -m examples.<name>``; each has a ``main()``."""
