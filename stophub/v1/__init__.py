"""Generated from proto/stophub/v1; run `make proto`."""
