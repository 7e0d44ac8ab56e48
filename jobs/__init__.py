"""Ray job entrypoints."""
