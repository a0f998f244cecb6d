"""Inference: model backends (PyTorch, ONNX Runtime), span decoding, QuestionAnswerer."""
