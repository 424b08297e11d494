"""Evaluation parts shared by the monitors, the methods and ``sslrun finetune``: frozen features, kNN, RankMe, the
online probe and the supervised classifier."""
