"""kmsportal: a key management system with a public key infrastructure."""
