"""Data a sweep reads: datasets, the demo photos and video, the demo detectors, the cache directory."""
