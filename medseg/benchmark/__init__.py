"""Benchmark models x losses on one dataset: the grid runner, leaderboard maths, tables, plots, HTML."""
