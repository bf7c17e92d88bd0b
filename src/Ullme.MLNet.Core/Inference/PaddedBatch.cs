using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// A right-padded batch on a device: ids [B, T], attention mask [B, T] (1 = real token) and pooling mask [B, T]
/// (attention mask minus instruction tokens). Built with one host→device copy per tensor.
/// </summary>
internal sealed class PaddedBatch : IDisposable
{
    public Tensor InputIds { get; }
    public Tensor AttentionMask { get; }
    public Tensor PoolingMask { get; }
    public long Tokens { get; }

    public PaddedBatch(IReadOnlyList<EncodedText> rows, int padId, Device device)
    {
        int b = rows.Count;
        int t = 0;
        foreach (var r in rows) t = Math.Max(t, r.Length);
        var ids = new long[b * t];
        var attn = new long[b * t];
        var pool = new long[b * t];
        long tokens = 0;
        for (int i = 0; i < b; i++)
        {
            var r = rows[i];
            int o = i * t;
            for (int j = 0; j < t; j++)
            {
                bool real = j < r.Length;
                ids[o + j] = real ? r.Ids[j] : padId;
                attn[o + j] = real ? 1 : 0;
                pool[o + j] = real && (j < r.InstructionStart || j >= r.InstructionStart + r.InstructionLength) ? 1 : 0;
            }
            tokens += r.Length;
        }
        Tokens = tokens;
        InputIds = ToDevice(tensor(ids, [b, t], ScalarType.Int64), device);
        AttentionMask = ToDevice(tensor(attn, [b, t], ScalarType.Int64), device);
        PoolingMask = ToDevice(tensor(pool, [b, t], ScalarType.Int64), device);
    }

    private static Tensor ToDevice(Tensor cpu, Device device)
    {
        if (device.type == TorchSharp.DeviceType.CPU) return cpu;
        var moved = cpu.to(device);
        cpu.Dispose();
        return moved;
    }

    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        PoolingMask.Dispose();
    }
}
