"""fedunlearn's framework-free engine: data, models, unlearning, audit.

Nothing here imports Flower; client/ and server/ wrap it.
"""
