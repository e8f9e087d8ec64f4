"""Ecstatic: a self-hostable static-site host with privacy-friendly analytics."""
