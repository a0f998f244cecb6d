"""Export to ONNX (fp32 / int8) with a parity check against the PyTorch model."""
