"""query room: analytics answered from ClickHouse."""
