"""The one training loop and what it keeps per epoch."""
