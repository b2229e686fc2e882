"""Flower ClientApp for fedunlearn (federation lands with the federation issue)."""
