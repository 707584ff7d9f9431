"""GPU audio servers: shared core (config, audio, server plumbing, host, client)."""

__version__ = "0.1.0"
