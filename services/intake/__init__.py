"""intake room: access logs in, ClickHouse rows out."""
