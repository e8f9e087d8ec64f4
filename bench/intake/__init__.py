"""bench/intake: the intake benchmark (run it with ``python -m bench.intake``)."""
