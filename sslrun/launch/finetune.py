"""`python finetune.py <overrides>`: `sslrun finetune` (see sslrun/launch/__init__.py)."""

from sslrun.launch import relaunch

relaunch(__file__)
