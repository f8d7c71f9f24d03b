"""A client as a whole: end-of-contract destruction and its signed certificate."""
