"""Evaluation and monitoring that runs alongside pretraining: online linear probe, kNN monitor, throughput."""
