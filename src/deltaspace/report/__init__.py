"""Markdown tables and plots for runs, sweeps and studies."""
