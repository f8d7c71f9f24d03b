"""The ``systemstate`` source plugin: what it takes to rebuild a Linux host by hand."""
