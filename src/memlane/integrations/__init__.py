"""Adapters that make memlane the memory of agent frameworks (each one an extra)."""
