"""The hooks wing."""
