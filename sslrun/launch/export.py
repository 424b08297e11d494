"""`python export.py <overrides>`: `sslrun export` (see sslrun/launch/__init__.py)."""

from sslrun.launch import relaunch

relaunch(__file__)
