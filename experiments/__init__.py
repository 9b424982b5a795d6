"""Scaling experiments: sweeps, analysis, plots (python -m experiments.<tool>)."""
