"""FaceNet (Inception-ResNet-v1, CASIA-WebFace): architecture, TensorFlow-free converter, encoder."""
