"""Container images of Ecstatic and its platform (Caddy, Prometheus), built with podman."""
