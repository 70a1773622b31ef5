"""Scripts that measure telescore: they print figures, they do not assert timings."""
