"""Lambda handlers: thin Powertools handlers over plain-Python logic."""
