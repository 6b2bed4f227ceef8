"""The config wing."""
