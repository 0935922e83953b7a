"""Data: the embedded default dataset, robust image decoding, ImageFolder datasets, transforms."""
