"""Models of the pki app."""
