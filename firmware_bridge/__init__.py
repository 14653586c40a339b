"""edgesort firmware_bridge."""
