using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training.Integration;

/// <summary>
/// Runs a test class with one intra-op torch thread and restores the previous count afterwards. The trainer tests
/// use a tiny model whose operations are far too small to split: on the shared 2-core test machine one thread was
/// measured ~7x faster than two (a GRL backward on 6 triplets: 0.7–1.4 s vs 8–9 s).
/// </summary>
public abstract class SingleThreaded : IDisposable
{
    private readonly int _previous = get_num_threads();

    protected SingleThreaded() => set_num_threads(1);

    public virtual void Dispose()
    {
        set_num_threads(_previous);
        GC.SuppressFinalize(this);
    }
}
