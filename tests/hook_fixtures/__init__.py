"""Hook scripts and helpers for the hook tests."""
