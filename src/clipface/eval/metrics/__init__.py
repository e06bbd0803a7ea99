"""Pure metrics, one module per task (as CLIP_benchmark's ``metrics/``): numpy arrays in, numbers out, no models."""
