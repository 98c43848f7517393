"""The documentation's generated tables: ``python -m docs.generate`` (``make docs``)."""
