using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Losses;

/// <summary>Shape checks and precision handling shared by the objectives.</summary>
internal static class LossChecks
{
    /// <summary>Losses are computed in float32 at least: bfloat16/float16 inputs are upcast, float32/float64 are
    /// returned as they are (the same object: never dispose the result separately from the input).</summary>
    public static Tensor Upcast(Tensor t) => t.dtype is ScalarType.Float64 or ScalarType.Float32 ? t : t.to(ScalarType.Float32);

    public static void Rank(Tensor t, int rank, string name)
    {
        if (t.dim() != rank)
            throw new UllmeException($"Tensor '{name}' must have {rank} dimension(s), got shape [{string.Join(", ", t.shape)}].");
    }

    public static void SameShape(Tensor a, string aName, Tensor b, string bName)
    {
        if (!a.shape.SequenceEqual(b.shape))
            throw new UllmeException($"Tensor '{bName}' must have the shape of '{aName}' [{string.Join(", ", a.shape)}], got [{string.Join(", ", b.shape)}].");
    }

    public static string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";
}
