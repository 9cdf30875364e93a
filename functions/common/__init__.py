"""What the handlers share: env config, observability, and the small AWS adapters."""
