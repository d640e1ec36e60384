"""Request and response shapes of every protocol the service speaks."""
