"""Serving: the process that wires webhook and cluster together, and live reload."""
