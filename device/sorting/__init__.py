"""The sorting core: find items in a frame, follow them along the belt, decide once, eject on the encoder."""
