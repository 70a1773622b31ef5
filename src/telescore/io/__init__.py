"""Adapters, one external system per module."""
