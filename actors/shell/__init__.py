"""The shell wing."""
