"""Stage 1: corpus discovery, frame and audio loading, backbones and the extraction run loop."""
