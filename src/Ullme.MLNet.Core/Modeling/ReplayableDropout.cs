using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Dropout whose masks come from one explicit random source, the same for every device: the host's (CPU) default
/// generator, <see cref="Source"/>. A mask for a CUDA tensor is drawn on the host and copied over.
/// <para>
/// Why: GradCache and activation checkpointing recompute a forward and must draw the same masks again, and a
/// checkpoint must restore the random stream. TorchSharp 0.107 can save and restore only the CPU generator
/// (<c>torch.get_rng_state</c>, <c>Generator.get_state</c>); it exposes no CUDA generator state, and
/// <c>new torch.Generator(seed, cuda)</c> makes a CPU generator (native <c>THSGenerator_new</c> ignores the device).
/// <c>nn.Dropout</c> on a CUDA tensor draws from the CUDA generator, so a replay there drew other masks and the
/// GradCache gradient was not the gradient of the loss computed. With one host source, <see cref="CaptureState"/> /
/// <see cref="RestoreState"/> cover every device, and one seed gives the same masks on CPU and CUDA.
/// </para>
/// <para>
/// On CPU the arithmetic is ATen's own dropout (<c>noise = empty_like(x).bernoulli_(1 − p); noise /= 1 − p;
/// x · noise</c>), so results are bit-identical to <c>nn.Dropout</c> from the same generator state. Active only in
/// training mode, as <c>nn.Dropout</c>.
/// </para>
/// </summary>
internal sealed class ReplayableDropout : nn.Module<Tensor, Tensor>
{
    /// <summary>The random source of every dropout mask: the host's default generator (the one
    /// <c>torch.manual_seed</c> seeds and training checkpoints save).</summary>
    public static torch.Generator Source { get; } = torch.Generator.Default;

    private readonly double _p;

    /// <param name="p">Probability of zeroing an element, in [0, 1].</param>
    public ReplayableDropout(double p) : base(nameof(ReplayableDropout))
    {
        if (!(p >= 0 && p <= 1)) throw new UllmeException($"Dropout probability must be between 0 and 1, got {p}.");
        _p = p;
    }

    /// <summary>The drop probability.</summary>
    public double P => _p;

    /// <summary>The state of <see cref="Source"/> (a byte tensor the caller owns).</summary>
    public static Tensor CaptureState() => Source.get_state();

    /// <summary>Puts <see cref="Source"/> back to <paramref name="state"/> (from <see cref="CaptureState"/>).</summary>
    public static void RestoreState(Tensor state) => Source.set_state(state);

    public override Tensor forward(Tensor x) => training ? Apply(x, _p) : x;

    /// <summary>Dropout with probability <paramref name="p"/> drawn from <see cref="Source"/> (for callers that are in
    /// training mode themselves, e.g. attention-probability dropout). <paramref name="p"/> = 0 returns <paramref name="x"/>.</summary>
    public static Tensor Apply(Tensor x, double p)
    {
        if (p == 0 || x.numel() == 0) return x;
        using var scope = NewDisposeScope();
        if (p == 1) return zeros_like(x).MoveToOuterDisposeScope();
        double keep = 1 - p;
        var noise = x.device.type == DeviceType.CPU
            ? empty_like(x).bernoulli_(keep, Source)
            : empty(x.shape, x.dtype, CPU).bernoulli_(keep, Source).to(x.device);
        using var keepScalar = keep.ToScalar();
        noise.div_(keepScalar);
        return x.mul(noise).MoveToOuterDisposeScope();
    }
}
