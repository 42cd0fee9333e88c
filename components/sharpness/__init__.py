"""The SharpnessProbe and its push decision."""
