"""The turn wing."""
