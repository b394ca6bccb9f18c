"""Training, export and evaluation of the project's models (needs the `train` extra: torch)."""
