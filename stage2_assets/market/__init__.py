"""Market data as plain pandas: bar schema, trading calendar, simulator. No Dagster imports."""
