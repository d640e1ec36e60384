"""Route modules, one per protocol."""
