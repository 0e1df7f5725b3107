"""Models of the vault app."""
