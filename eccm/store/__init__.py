"""What the record directory holds and how: file names (more of the store moves here)."""
