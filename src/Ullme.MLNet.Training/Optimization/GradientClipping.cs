using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Optimization;

/// <summary>Global-norm gradient clipping (PyTorch's <c>clip_grad_norm_</c>).</summary>
internal static class GradientClipping
{
    /// <summary>‖g‖₂ over all gradients of <paramref name="parameters"/> as if they were one vector (parameters
    /// without a gradient are skipped). NaN or ∞ if any gradient is.</summary>
    public static double GlobalNorm(IEnumerable<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        var norms = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!.to(ScalarType.Float32).norm()).ToList();
        if (norms.Count == 0) return 0;
        return stack(norms).norm().item<float>();
    }

    /// <summary>
    /// Scales all gradients by min(1, maxNorm / (‖g‖ + 1e-6)) so their global norm is at most
    /// <paramref name="maxNorm"/>. Returns the norm before clipping. Non-finite norms leave the gradients as they are.
    /// </summary>
    public static double ClipGlobalNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        if (!(maxNorm > 0)) throw new UllmeException($"Gradient clipping: maxNorm must be positive, got {maxNorm}.");
        var list = parameters.ToList();
        double norm = GlobalNorm(list);
        if (!double.IsFinite(norm)) return norm;
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();              // the grad handles read below
            using var factor = coefficient.ToScalar();        // held across the native calls (see ScalarSafe.AdamW)
            foreach (var p in list)
                if (p.grad is { } g) g.mul_(factor);
        }
        return norm;
    }
}
