"""The rules of StopHub: plain Python, no I/O, no wire or database imports."""
