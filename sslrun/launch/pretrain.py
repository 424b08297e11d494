"""`python pretrain.py <overrides>`: `sslrun pretrain` (see sslrun/launch/__init__.py)."""

from sslrun.launch import relaunch

relaunch(__file__)
