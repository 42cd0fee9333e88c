"""The comparison: label noise before training, and the report over every run."""
