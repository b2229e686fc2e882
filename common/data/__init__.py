"""Datasets, partitioners and forget-set selectors."""
