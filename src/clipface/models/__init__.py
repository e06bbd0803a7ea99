"""Models: the registry, the encoder interface, the face front end, the encoders and their backends."""
