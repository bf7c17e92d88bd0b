using System.Runtime.InteropServices;
using Ullme.MLNet.Onnx.Graph;
using static TorchSharp.torch;

namespace Ullme.MLNet.Onnx.Export;

/// <summary>
/// The weights of a backbone (its <c>state_dict</c>, keyed by Hugging Face checkpoint names) as graph initializers,
/// and its linear layers as float32 <c>MatMul</c>, dynamic-int8 <c>DynamicQuantizeMatMul</c> or int4
/// <c>MatMulNBits</c> nodes.
/// </summary>
internal sealed class LinearEmitter
{
    private readonly OnnxGraphBuilder _g;
    private readonly IReadOnlyDictionary<string, Tensor> _weights;
    private readonly OnnxQuantization _quantize;
    private readonly int _blockSize;

    public LinearEmitter(OnnxGraphBuilder g, IReadOnlyDictionary<string, Tensor> weights, OnnxQuantization quantize, int blockSize)
    {
        _g = g;
        _weights = weights;
        _quantize = quantize;
        _blockSize = blockSize;
    }

    /// <summary>Linear layers emitted, by kind.</summary>
    public int LinearCount { get; private set; }

    public Tensor Weight(string key) => _weights.TryGetValue(key, out var t) ? t
        : throw new UllmeException($"ONNX export: the model has no weight '{key}'.");

    public bool Has(string key) => _weights.ContainsKey(key);

    /// <summary>A float32 copy of a weight, row-major.</summary>
    public static float[] Floats(Tensor t)
    {
        using var f = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return f.data<float>().ToArray();
    }

    /// <summary>A weight as a float32 initializer of the same shape (named after the checkpoint key).</summary>
    public string Constant(string key, Func<float[], float[]>? transform = null)
    {
        var t = Weight(key);
        float[] data = Floats(t);
        if (transform is not null) data = transform(data);
        return _g.Floats(key, t.shape, data);
    }

    /// <summary>
    /// y = x · Wᵀ + b for an HF linear layer (<paramref name="key"/>.weight [out, in], optional .bias [out]).
    /// <paramref name="rows"/> narrows the layer to output rows [start, start + count) (a fused projection split
    /// into parts).
    /// </summary>
    public string Linear(string x, string key, (long Start, long Count)? rows = null, string? name = null)
    {
        var w = Weight(key + ".weight");
        return Emit(x, Floats(w), w.shape[0], w.shape[1], Has(key + ".bias") ? Floats(Weight(key + ".bias")) : null, rows, name ?? key);
    }

    private string Emit(string x, float[] all, long outFeatures, long inFeatures, float[]? allBias, (long Start, long Count)? rows, string baseName)
    {
        long start = rows?.Start ?? 0, count = rows?.Count ?? outFeatures;
        // Wᵀ restricted to the rows: [in, count], row-major.
        var wt = new float[inFeatures * count];
        for (long o = 0; o < count; o++)
        {
            long src = (start + o) * inFeatures;
            for (long i = 0; i < inFeatures; i++) wt[i * count + o] = all[src + i];
        }
        float[]? bias = allBias?.AsSpan((int)start, (int)count).ToArray();
        LinearCount++;
        string y;
        switch (_quantize)
        {
            case OnnxQuantization.Int8:
            {
                var (q, scales) = QuantizeInt8PerColumn(wt, inFeatures, count);
                string qb = _g.Initializer(baseName + ".weight_int8", OnnxType.Int8, [inFeatures, count], MemoryMarshal.AsBytes(q.AsSpan()));
                string sc = _g.Floats(baseName + ".weight_scale", [count], scales);
                string zp = _g.Initializer(baseName + ".weight_zero_point", OnnxType.Int8, [count], new byte[count]);
                var inputs = new List<string> { x, qb, sc, zp };
                if (bias is not null) inputs.Add(_g.Floats(baseName + ".bias", [count], bias));
                return _g.DomainNode("com.microsoft", "DynamicQuantizeMatMul", inputs.ToArray());
            }
            case OnnxQuantization.Int4:
            {
                var (packed, scales, blocks) = QuantizeInt4(wt, inFeatures, count, _blockSize);
                string qb = _g.Initializer(baseName + ".weight_q4", OnnxType.UInt8, [count, blocks, _blockSize / 2], packed);
                string sc = _g.Floats(baseName + ".weight_scales", [count * blocks], scales);
                y = _g.DomainNode("com.microsoft", "MatMulNBits", [x, qb, sc],
                    ("K", inFeatures), ("N", count), ("bits", 4L), ("block_size", (long)_blockSize), ("accuracy_level", 4L));
                break;
            }
            default:
                y = _g.MatMul(x, _g.Floats(baseName + ".weight_t", [inFeatures, count], wt));
                break;
        }
        return bias is null ? y : _g.Add(y, _g.Floats(baseName + ".bias", [count], bias));
    }

    /// <summary>Symmetric int8 per column of Wᵀ [in, out] (one scale per output channel, zero point 0).</summary>
    internal static (sbyte[] Q, float[] Scales) QuantizeInt8PerColumn(float[] wt, long rows, long cols)
    {
        var scales = new float[cols];
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                scales[j] = Math.Max(scales[j], Math.Abs(wt[i * cols + j]));
        for (long j = 0; j < cols; j++) scales[j] = scales[j] > 0 ? scales[j] / 127f : 1f;
        var q = new sbyte[wt.Length];
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
                q[i * cols + j] = (sbyte)Math.Clamp(MathF.Round(wt[i * cols + j] / scales[j], MidpointRounding.ToEven), -127f, 127f);
        return (q, scales);
    }

    /// <summary>
    /// MatMulNBits' layout: for each output column n and each block of <paramref name="blockSize"/> input rows, 4-bit
    /// values q = round(w / scale) + 8 (symmetric, scale = max |w| / 7 in the block; the default zero point 8), two per
    /// byte, the even element in the low nibble; the last block is zero-padded.
    /// </summary>
    internal static (byte[] Packed, float[] Scales, long Blocks) QuantizeInt4(float[] wt, long k, long n, int blockSize)
    {
        long blocks = (k + blockSize - 1) / blockSize;
        var packed = new byte[n * blocks * (blockSize / 2)];
        var scales = new float[n * blocks];
        for (long col = 0; col < n; col++)
            for (long b = 0; b < blocks; b++)
            {
                float max = 0;
                for (long r = b * blockSize; r < Math.Min(k, (b + 1) * blockSize); r++) max = Math.Max(max, Math.Abs(wt[r * n + col]));
                float scale = max > 0 ? max / 7f : 1f;
                scales[col * blocks + b] = scale;
                long byteBase = (col * blocks + b) * (blockSize / 2);
                for (int e = 0; e < blockSize; e++)
                {
                    long r = b * blockSize + e;
                    int q = r < k ? (int)Math.Clamp(MathF.Round(wt[r * n + col] / scale, MidpointRounding.ToEven) + 8, 0, 15) : 8;
                    if ((e & 1) == 0) packed[byteBase + e / 2] = (byte)q;
                    else packed[byteBase + e / 2] |= (byte)(q << 4);
                }
            }
        return (packed, scales, blocks);
    }
}
