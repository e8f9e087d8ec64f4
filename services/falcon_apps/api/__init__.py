"""api room: users, tokens, sites, hostnames, deploys."""
