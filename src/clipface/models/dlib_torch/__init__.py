"""dlib's face-recognition ResNet read without dlib and run in PyTorch: reader, network, module, conversion."""
