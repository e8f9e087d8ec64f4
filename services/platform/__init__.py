"""Config for the platform's programs (Caddy, Prometheus), generated from the layout map.

The local stack and the Pulumi program both call these, so the routes, scrape targets and
ports they run with are the ones ``services.targets`` declares.
"""
