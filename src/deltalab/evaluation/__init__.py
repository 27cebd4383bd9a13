"""Evaluation backends that score answers themselves (standard benchmarks), not through the task verifiers."""
