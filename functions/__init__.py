"""Ferry's functions: one module per capability; importing the package registers them."""
