"""The source-plugin contract: what a plugin must answer, and the typed streams a capture yields."""
