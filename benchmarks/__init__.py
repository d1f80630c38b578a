"""Side-by-side benchmarks of distbreaker and its peers: ``python -m benchmarks.run``."""
