"""Export a trained model as a bundle the service loads (DESIGN §5): ONNX graph and data files."""
