"""Dramatiq middleware for Ferry's workers, one concern a module; the order is fixed in `runtime.worker.broker`."""
