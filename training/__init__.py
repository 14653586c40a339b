"""edgesort training."""
