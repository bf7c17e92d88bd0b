using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// What every layer of one forward pass shares, computed once per batch: the rotary cos/sin for the batch's
/// positions and the additive attention masks (one for full-attention layers, one for sliding-window layers).
/// Created by <see cref="DecoderModel.PrepareInputs"/>; the tensors live in the caller's dispose scope (or are
/// released by <see cref="Dispose"/>).
/// </summary>
internal sealed class DecoderInputs : IDisposable
{
    /// <summary>[B, T, rotary_dim] in the compute dtype.</summary>
    public required Tensor Cos { get; init; }

    /// <summary>[B, T, rotary_dim] in the compute dtype.</summary>
    public required Tensor Sin { get; init; }

    /// <summary>Additive mask (0 = attend, dtype-min = blocked) for full-attention layers: [B, 1, T, T] causal,
    /// [B, 1, 1, T] bidirectional (every query sees the same keys).</summary>
    public required Tensor FullMask { get; init; }

    /// <summary>[B, 1, T, T] additive mask for sliding-window layers; null when no layer slides in this mode.</summary>
    public Tensor? SlidingMask { get; init; }

    /// <summary>The attention mode the masks were built for.</summary>
    public required AttentionMode Mode { get; init; }

    /// <summary>The mask a layer uses.</summary>
    public Tensor MaskFor(DecoderLayer layer) => layer.IsSliding && SlidingMask is not null ? SlidingMask : FullMask;

    public void Dispose()
    {
        Cos.Dispose();
        Sin.Dispose();
        FullMask.Dispose();
        SlidingMask?.Dispose();
    }
}
