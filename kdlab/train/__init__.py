"""The one training loop, its reporter protocol, the resumable state it keeps and the best-checkpoint rule."""
