"""The results location: layout and row schema, Parquet store, lease, reading rows, status."""
