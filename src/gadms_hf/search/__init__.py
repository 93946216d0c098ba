"""Search image galleries by description: a crash-safe folder index, galleries, and per-word GASS scores."""
