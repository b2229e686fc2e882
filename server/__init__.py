"""Flower ServerApp for fedunlearn (federation lands with the federation issue)."""
