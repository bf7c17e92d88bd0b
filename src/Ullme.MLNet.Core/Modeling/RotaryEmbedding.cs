using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Rotary position embedding (RoPE, Su et al. 2021) in HF's rotate-half layout: dimension i of a head is paired with
/// dimension i + d/2 and the pair is turned by angle <c>position · inv_freq[i]</c>:
/// <code>x' = x * cos + rotate_half(x) * sin,   rotate_half([a, b]) = [-b, a]</code>
/// Only the first <see cref="RopeSettings.RotaryDim"/> dimensions rotate (Phi-3's partial rotary); the rest pass
/// through. The inverse frequencies follow HF's <c>modeling_rope_utils</c> (default, linear, dynamic NTK, llama3,
/// longrope), computed in float32 like HF. cos/sin tables are cached per (variant, dtype, device) and grown on demand;
/// they are not parameters and never appear in <c>named_parameters()</c> or <c>state_dict()</c> (a checkpoint's
/// <c>rotary_emb.inv_freq</c> is ignored).
/// </summary>
internal sealed class RotaryEmbedding : nn.Module
{
    private readonly RopeSettings _rope;
    private readonly object _lock = new();
    // Not fields of type Tensor (those would register as buffers): a dictionary of cached tables.
    private readonly Dictionary<(long Variant, ScalarType Dtype, string Device), (long Length, Tensor Cos, Tensor Sin)> _tables = new();

    public RotaryEmbedding(RopeSettings rope) : base(nameof(RotaryEmbedding))
    {
        _rope = rope;
        RegisterComponents();
    }

    /// <summary>The settings this module was built with.</summary>
    public RopeSettings Settings => _rope;

    /// <summary>
    /// cos and sin for the given positions, each [B, T, rotary_dim] in <paramref name="dtype"/> on the positions'
    /// device, already multiplied by the attention scaling (longrope). Like HF, which frequency set is used can depend
    /// on the largest position in the batch (longrope short/long factors, dynamic NTK).
    /// </summary>
    public (Tensor Cos, Tensor Sin) Lookup(Tensor positionIds, ScalarType dtype)
    {
        if (positionIds.dim() != 2)
            throw new UllmeException($"position_ids must be [batch, seq], got shape [{string.Join(", ", positionIds.shape)}].");
        long b = positionIds.shape[0], t = positionIds.shape[1];
        if (positionIds.numel() == 0)
            return (zeros(b, t, _rope.RotaryDim, dtype: dtype, device: positionIds.device),
                    zeros(b, t, _rope.RotaryDim, dtype: dtype, device: positionIds.device));
        long minPos = positionIds.min().item<long>();
        long maxPos = positionIds.max().item<long>();
        if (minPos < 0)
            throw new UllmeException($"position_ids must not be negative (got {minPos}).");
        long seqLen = maxPos + 1;

        // Which frequency set: 0 = the static one; 1 = longrope's long factors; n > 1 = dynamic NTK for length n.
        long variant = _rope.Kind switch
        {
            "longrope" => seqLen > _rope.OriginalMaxPositionEmbeddings ? 1 : 0,
            "dynamic" => seqLen > _rope.MaxPositionEmbeddings ? seqLen : 0,
            _ => 0,
        };

        using var flat = positionIds.reshape(-1);
        lock (_lock)
        {
            // Gather under the lock: a concurrent call may replace (and dispose) a table that is too short.
            var (cosTable, sinTable) = Table(variant, seqLen, dtype, positionIds.device);
            var cos = cosTable.index_select(0, flat).view(b, t, _rope.RotaryDim);
            var sin = sinTable.index_select(0, flat).view(b, t, _rope.RotaryDim);
            return (cos, sin);
        }
    }

    /// <summary>
    /// Rotates the leading rotary dimensions of <paramref name="x"/> [B, heads, T, head_dim] by cos/sin
    /// [B, T, rotary_dim]; the arithmetic happens in x's dtype, as in HF.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long rotaryDim = cos.shape[^1];
        long headDim = x.shape[^1];
        Tensor c = cos.unsqueeze(1);                                     // [B, 1, T, R]
        Tensor s = sin.unsqueeze(1);
        Tensor rot = rotaryDim == headDim ? x : x.narrow(-1, 0, rotaryDim);
        Tensor rotated = (rot * c).Add(RotateHalf(rot) * s);
        Tensor result = rotaryDim == headDim
            ? rotated
            : cat([rotated, x.narrow(-1, rotaryDim, headDim - rotaryDim)], -1);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>[a, b] → [-b, a] over the last dimension (halves a and b).</summary>
    public static Tensor RotateHalf(Tensor x)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        Tensor x1 = x.narrow(-1, 0, half);
        Tensor x2 = x.narrow(-1, half, half);
        return cat([x2.neg(), x1], -1).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse frequencies [rotary_dim / 2] (float32, CPU) of a variant, as HF computes them.</summary>
    public Tensor InverseFrequencies(long variant = 0)
    {
        using var scope = NewDisposeScope();
        int dim = _rope.RotaryDim;
        // HF: base ** (arange(0, dim, 2).float() / dim), then 1.0 / that. Python's `scalar / tensor` is
        // tensor.reciprocal() * scalar, reproduced here.
        Tensor exponent = ScalarOps.Arange(0, dim, 2, ScalarType.Int64).to(ScalarType.Float32).Div(dim);
        Tensor invFreq;
        switch (_rope.Kind)
        {
            case "linear":
                invFreq = ScalarPow(_rope.Theta, exponent).reciprocal().Div(_rope.Factor);
                break;
            case "dynamic":
                {
                    double theta = _rope.Theta;
                    if (variant > 1)
                    {
                        double f = _rope.Factor;
                        theta *= Math.Pow(f * variant / _rope.MaxPositionEmbeddings - (f - 1), dim / (double)(dim - 2));
                    }
                    invFreq = ScalarPow(theta, exponent).reciprocal();
                    break;
                }
            case "llama3":
                {
                    Tensor baseFreq = ScalarPow(_rope.Theta, exponent).reciprocal();
                    double factor = _rope.Factor, low = _rope.LowFreqFactor, high = _rope.HighFreqFactor;
                    double oldContext = _rope.OriginalMaxPositionEmbeddings;
                    double lowFreqWavelen = oldContext / low;
                    double highFreqWavelen = oldContext / high;
                    Tensor wavelen = baseFreq.reciprocal().Mul(2 * Math.PI);
                    // Long wavelengths (low frequencies) are divided by the factor, short ones kept,
                    // and the band in between interpolated smoothly.
                    Tensor scaled = where(wavelen.Gt(lowFreqWavelen), baseFreq.Div(factor), baseFreq);
                    Tensor smooth = wavelen.reciprocal().Mul(oldContext).Sub(low).Div(high - low);
                    Tensor smoothed = (smooth.SubtractedFrom(1) * scaled).Div(factor).Add(smooth * scaled);
                    Tensor isMedium = wavelen.Lt(highFreqWavelen).logical_not().logical_and(wavelen.Gt(lowFreqWavelen).logical_not());
                    invFreq = where(isMedium, smoothed, scaled);
                    break;
                }
            case "longrope":
                {
                    var factors = variant == 1 ? _rope.LongFactor! : _rope.ShortFactor!;
                    Tensor ext = tensor(factors.Select(v => (float)v).ToArray(), dtype: ScalarType.Float32);
                    invFreq = (ext * ScalarPow(_rope.Theta, exponent)).reciprocal();
                    break;
                }
            default:
                invFreq = ScalarPow(_rope.Theta, exponent).reciprocal();
                break;
        }
        return invFreq.MoveToOuterDisposeScope();
    }

    /// <summary>Python's <c>float ** tensor</c>: the base rounded to float32, raised elementwise.</summary>
    private static Tensor ScalarPow(double theta, Tensor exponent) => ScalarOps.FullLike(exponent, theta).pow(exponent);

    private (Tensor Cos, Tensor Sin) Table(long variant, long needed, ScalarType dtype, Device device)
    {
        var key = (variant, dtype, device.ToString());
        lock (_lock)
        {
            if (_tables.TryGetValue(key, out var entry) && entry.Length >= needed)
                return (entry.Cos, entry.Sin);

            // Grow to a power of two (at least 256) so a stream of slightly longer batches does not rebuild each time.
            long length = Math.Max(256, (long)BitOperations.RoundUpToPowerOf2((ulong)needed));
            Tensor cos, sin;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                Tensor invFreq = InverseFrequencies(variant);                                         // [R/2]
                Tensor positions = ScalarOps.Arange(0, length, 1, ScalarType.Int64).to(ScalarType.Float32); // [L]
                Tensor freqs = positions.unsqueeze(1) * invFreq.unsqueeze(0);                          // [L, R/2]
                Tensor emb = cat([freqs, freqs], -1);                                                 // [L, R]
                Tensor c = emb.cos(), s = emb.sin();
                if (_rope.AttentionScaling != 1.0)
                {
                    c = c.Mul(_rope.AttentionScaling);
                    s = s.Mul(_rope.AttentionScaling);
                }
                cos = c.to(dtype).to(device).DetachFromDisposeScope();
                sin = s.to(dtype).to(device).DetachFromDisposeScope();
            }
            if (entry.Cos is not null)
            {
                entry.Cos.Dispose();
                entry.Sin.Dispose();
            }
            // Dynamic NTK tables depend on the exact length; keep only the newest one.
            if (variant > 1)
            {
                foreach (var stale in _tables.Where(kv => kv.Key.Variant > 1 && kv.Key != key).ToList())
                {
                    stale.Value.Cos.Dispose();
                    stale.Value.Sin.Dispose();
                    _tables.Remove(stale.Key);
                }
            }
            _tables[key] = (length, cos, sin);
            return (cos, sin);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            lock (_lock)
            {
                foreach (var (_, cos, sin) in _tables.Values)
                {
                    cos.Dispose();
                    sin.Dispose();
                }
                _tables.Clear();
            }
        }
        base.Dispose(disposing);
    }
}
