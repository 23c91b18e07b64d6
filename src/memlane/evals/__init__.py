"""Retrieval evaluations run through the public API (``memlane eval ...``)."""
