"""`edgeloop`, the command line: the top layer, over the local cloud, the demo and the factory."""
