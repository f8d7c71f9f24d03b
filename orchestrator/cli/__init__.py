"""The ``dobaas`` command: one module per command group."""
