"""The session wing."""
