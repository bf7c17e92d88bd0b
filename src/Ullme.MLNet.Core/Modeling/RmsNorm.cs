using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019): x / sqrt(mean(x²) + eps), then a learned per-channel
/// weight. No mean subtraction, no bias. The statistics are always computed in float32, whatever the model dtype,
/// exactly as HF does; where the weight is applied depends on <see cref="RmsNormStyle"/>:
/// <list type="bullet">
/// <item>Llama family: <c>weight * normed.to(dtype)</c> — the product happens in the model dtype.</item>
/// <item>Gemma2: <c>(normed * (1 + weight.float())).to(dtype)</c> — weights are offsets from 1, product in float32.</item>
/// </list>
/// </summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly double _eps;
    private readonly RmsNormStyle _style;

    /// <summary>The learned scale [dim] (checkpoint key suffix <c>.weight</c>).</summary>
    public Parameter weight;

    public RmsNorm(long dim, double eps, RmsNormStyle style, Device? device = null, ScalarType? dtype = null) : base(nameof(RmsNorm))
    {
        _eps = eps;
        _style = style;
        // Identity at initialisation: weight 1 for the Llama style, offset 0 for Gemma's (1 + w).
        weight = style == RmsNormStyle.Weight
            ? new Parameter(ones(dim, dtype: dtype, device: device))
            : new Parameter(zeros(dim, dtype: dtype, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        ScalarType inputType = x.dtype;
        Tensor x32 = x.to(ScalarType.Float32);                                  // [.., D]
        Tensor variance = x32.pow(Scalars.Two).mean([-1L], keepdim: true);      // [.., 1]
        Tensor normed = x32 * variance.Add(_eps).rsqrt();
        Tensor y = _style == RmsNormStyle.Weight
            ? weight * normed.to(inputType)
            : (normed * weight.to(ScalarType.Float32).Add(1.0)).to(inputType);
        return y.MoveToOuterDisposeScope();
    }
}
