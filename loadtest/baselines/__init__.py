"""Comparison targets for the benchmark (``make bench``). Not part of the product: nothing here is served."""
