"""The agents wing."""
