"""xsdata bindings of the vendored ISO 20022 schemas (tools/iso20022gen.py; do not edit).

Import the module of one message version, e.g. `from adapters.iso20022.generated import
camt_056_001_12`: the schemas share type names, so this package re-exports nothing.
"""
