using Ullme.MLNet.Benchmarks.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// The hardware limit: the best matmul throughput libtorch reaches on this machine with the run's thread count,
/// float32 and bfloat16, over a square GEMM and the two GEMM shapes that dominate a Qwen2-0.5B layer. Model FLOP
/// utilisation is measured against this number (not against a datasheet), so MFU isolates our overheads.
/// </summary>
public static class GemmSection
{
    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("GEMM peak");
        var shapes = new (string Name, long M, long K, long N)[]
        {
            ("square", 2048, 2048, 2048),
            ("MLP up", 1024, 896, 4864),
            ("MLP down", 1024, 4864, 896),
        };
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            double best = 0;
            // Emulated bfloat16 (no native support) is ~10x slower: a quarter of the rows keeps the run short.
            bool slow = dtype == ScalarType.BFloat16 && !Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16;
            foreach (var (name0, m0, k, n) in shapes)
            {
                long m = slow ? m0 / 4 : m0;
                string name = $"{name0} [{m} x {k}]·[{k} x {n}]";
                using var scope = NewDisposeScope();
                // As the model computes it: x [M, K] times a weight stored [N, K] (nn.Linear layout).
                var a = randn(m, k).to(dtype);
                var w = randn(n, k).to(dtype);
                double flops = 2.0 * m * k * n;
                var t = Timing.Measure(() => { using var c = nn.functional.linear(a, w); }, ctx.Budget / 2, minRepeats: 3);
                double rate = flops / t.MedianSeconds;
                best = Math.Max(best, rate);
                ctx.Report.Add("GEMM peak (hardware limit)", $"{Name(dtype)} {name}", new()
                {
                    ["GFLOP/s median"] = rate / 1e9,
                    ["GFLOP/s best"] = flops / t.BestSeconds / 1e9,
                });
            }
            ctx.GemmPeak[Name(dtype)] = best;
        }
        ctx.Report.AddRatio("bfloat16 / float32 GEMM peak", ctx.GemmPeak["bfloat16"] / ctx.GemmPeak["float32"],
            "best median GEMM rate, same threads",
            Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16 ? "native BF16 dot products vs FP32 FMA" : "no native bfloat16 on this CPU: emulated");
    }

    public static string Name(ScalarType t) => t == ScalarType.BFloat16 ? "bfloat16" : "float32";
}
