"""sslrun: config-driven self-supervised pretraining and evaluation."""

__version__ = "0.1.0"
