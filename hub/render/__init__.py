"""How the command line shows things to people: cases, money trails, case clocks and the SLA
report. Pure functions of what they are given; the commands in hub/cli/ read and print."""
