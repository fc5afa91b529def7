"""Pipeline stages: one module per step (export, cleanup, bn_fold, onnx_to_tf, tflite ...)."""
