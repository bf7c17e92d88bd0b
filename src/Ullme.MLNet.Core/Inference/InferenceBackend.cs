namespace Ullme.MLNet.Inference;

/// <summary>The engine that runs a model's forward pass (<see cref="ModelLoadOptions.Backend"/>).</summary>
public enum InferenceBackend
{
    /// <summary>TorchSharp (libtorch): every feature, training included.</summary>
    Torch,

    /// <summary>ONNX Runtime over an exported graph (Ullme.MLNet.Onnx): embedding, float32, int8 or int4.</summary>
    OnnxRuntime,
}
