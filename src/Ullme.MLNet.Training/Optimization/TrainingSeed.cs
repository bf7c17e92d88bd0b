using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Optimization;

/// <summary>
/// Determinism on CPU: one seed fixes torch's global generator (weight init of adapters, dropout) and the data
/// order. The order of epoch e is a pure function of (seed, e), so a resumed run needs only the epoch and the
/// position within it, not a serialised random-number generator.
/// </summary>
internal static class TrainingSeed
{
    /// <summary>Seeds torch's global generator.</summary>
    public static void Apply(int seed) => manual_seed(seed);

    /// <summary>A permutation of 0..count−1 for epoch <paramref name="epoch"/> (Fisher–Yates over a seeded
    /// <see cref="Random"/>, whose seeded sequence is stable across .NET versions).</summary>
    public static int[] EpochOrder(int seed, int epoch, int count, bool shuffle = true)
    {
        if (count < 0) throw new UllmeException($"EpochOrder: count must be non-negative, got {count}.");
        var order = Enumerable.Range(0, count).ToArray();
        if (!shuffle) return order;
        var rng = new Random(unchecked(seed * 1_000_003 + epoch * 7_919 + 17));
        for (int i = count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }
}
