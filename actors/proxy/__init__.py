"""The proxy wing."""
