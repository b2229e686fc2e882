"""Scenario runner, benchmark driver and the fedunlearn CLI."""
