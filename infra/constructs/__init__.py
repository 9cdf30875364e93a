"""One construct per concern, in the order of the loop."""
