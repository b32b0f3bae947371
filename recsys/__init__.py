"""A nightly batch recommender: train, score every user against every item, publish top-N."""

__version__ = "0.1.0"
