"""The ``files`` source plugin: local directory trees."""
