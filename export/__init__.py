"""edgesort export."""
