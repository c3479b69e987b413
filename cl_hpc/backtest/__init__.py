"""Backtests that pick the update cadence: replay the landing zone's history prequentially (train
up to window t, score on window t+1) for each cadence x strategy, and report accuracy, retrains,
training compute and freshness. ``python -m cl_hpc.backtest --help``; the engine is replay.py.
"""
