"""twostep: two-step verification for web accounts."""

__version__ = "0.1.0"
