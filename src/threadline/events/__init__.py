"""The buses that carry run events (``domain/events.py``) from the run loop to the streams following them."""
