"""Runtime: ONNX export, backends (torch | onnxruntime | tensorrt) with a fallback chain, TensorRT engine cache and
operator check, the decision pipeline, GPC-RANK/OPT ranking, the chunk executor and the safety filter."""
