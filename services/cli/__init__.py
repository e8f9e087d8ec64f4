"""The ecstatic command line."""
