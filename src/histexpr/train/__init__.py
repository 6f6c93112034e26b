"""Training: the shared loop for neural models and the extractor."""
