"""Runtime: ONNX export, backends (torch | onnxruntime | tensorrt) with a fallback chain, TensorRT engine cache and
operator check, the decision pipeline, and GPC-RANK/OPT ranking. The executor and safety filter arrive with #5."""
