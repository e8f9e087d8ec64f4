"""Shared parts every room imports; this package imports no room."""
