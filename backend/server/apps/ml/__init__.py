"""Serving-side algorithms: plain Python, no Django imports.

The research/ training script imports this package too, so that training and serving share a single
implementation of the preprocessing; a transform written twice is a transform that drifts.
"""
