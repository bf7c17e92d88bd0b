using Ullme.MLNet.Benchmarks.Infrastructure;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>Settings shared by all sections of one run.</summary>
public sealed record BenchContext(BenchReport Report, int Threads, bool Quick, BenchTexts Texts, string OutDir, string AssetsRoot)
{
    public bool AssetsAvailable => Directory.Exists(Path.Combine(AssetsRoot, "tokenizers"));

    /// <summary>Seconds of repeated timing per configuration (after a warm-up call).</summary>
    public double Budget => Quick ? 1.0 : 4.0;

    /// <summary>GEMM peak FLOP/s by dtype name ("float32", "bfloat16"), measured first.</summary>
    public Dictionary<string, double> GemmPeak { get; } = new();
}
