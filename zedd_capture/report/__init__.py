"""Per-scene reports: accuracy against the twin truth and a self-contained HTML page."""
