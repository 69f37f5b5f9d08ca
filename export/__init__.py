"""Turn a run's trained models into ONNX (fp32) and int8 ONNX, and prove each export agrees with PyTorch.

runs/<name>/onnx/<model>/  model.onnx, model_int8.onnx, config.json, tokenizer files, export_report.json
runs/<name>/onnx/report.md, report.json   one table for the run
"""
