"""Input data: reading sources, validating them, ID vocabularies and train/validation splits."""
