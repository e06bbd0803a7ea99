"""Stage 2, models: the registry, the encoder interface, the face front end, the encoders and their backends."""
