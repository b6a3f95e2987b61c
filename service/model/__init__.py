"""The model runtime: bundle loading, feature records, onnxruntime, micro-batching, profiles."""
