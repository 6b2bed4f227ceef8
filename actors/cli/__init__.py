"""The cli wing."""
