"""One run end to end, the evaluation of a target, the console, trackers and time estimates."""
