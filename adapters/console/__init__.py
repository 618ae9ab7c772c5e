"""`stophub console`: the duty desk, a web application that runs at one institution (the
centre, a bank, a payment institution, the regulator or an auditor), holds that institution's
identity, and talks to the hub only over gRPC through the SDK. docs/console.md shows it; ADR 20
says why it is built this way."""
