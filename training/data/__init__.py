"""Data loading (one module per source format) and the processed on-disk data set."""
