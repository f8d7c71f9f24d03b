"""Local directory trees for every plugin that captures one (files, system state): the walk with full metadata
(``walk``), the walk in a process of its own against the parent listing (``delta`` spawns ``child``)."""
