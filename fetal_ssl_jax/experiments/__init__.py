"""Experiments: the paper grid as independent launch.py jobs (sweep), and the end-to-end demo."""
