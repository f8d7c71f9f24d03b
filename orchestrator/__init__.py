"""Do'BaaS backup orchestrator."""

__version__ = "0.1.0"
