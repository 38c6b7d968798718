"""The multi-label task: CSV and synthetic data, the task on the engine."""
