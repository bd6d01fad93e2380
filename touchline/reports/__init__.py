"""The terminal reports of `touchline report`."""
