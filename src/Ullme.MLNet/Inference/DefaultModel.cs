// PLACEHOLDER until the BERT/ONNX import lands (branch bert replaces this whole file).
namespace Ullme.MLNet.Inference;

public static class DefaultModel
{
    public const string HuggingFaceId = "sentence-transformers/all-MiniLM-L6-v2";

    public static string EnsureFolder() => throw new NotSupportedException("The bundled default model is not imported yet.");
}
