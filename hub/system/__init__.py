"""The hub's reach into the machine it runs on: the wall clock, the official working-day
calendar, and the case-clock policy file. Nothing else in the hub reads the machine's time."""
