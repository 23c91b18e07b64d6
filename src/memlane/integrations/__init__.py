"""Adapters that let agent frameworks keep their memory in memlane.

Each module needs its framework, installed as an extra (``pip install 'memlane[<extra>]'``);
``import memlane`` never imports any of them.
"""
