"""Pure cryptographic functions over bytes; no Django imports."""
