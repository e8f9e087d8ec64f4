"""The Falcon rooms: api and query."""
