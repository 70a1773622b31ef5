"""Serving: the MLServer runtime, its model repository and the prediction log."""
