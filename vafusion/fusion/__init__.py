"""Stage 2: fusion models trained from a feature cache alone (no corpus, GPU, torchvision or PyAV)."""
