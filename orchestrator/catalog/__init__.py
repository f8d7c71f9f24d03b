"""The catalog: a metadata index for fast browsing by date and search. The vault stays the source of truth;
the catalog can always be rebuilt from it (``dobaas catalog rebuild``)."""
