"""StopHub."""
