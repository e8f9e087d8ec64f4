"""build room: turn a checked-out site into files to publish, inside a sandbox.

``config`` parses ``ecstatic.toml``, ``detect`` picks a generator when no command is
configured, and ``sandbox`` runs the command under bubblewrap with limits.
"""
