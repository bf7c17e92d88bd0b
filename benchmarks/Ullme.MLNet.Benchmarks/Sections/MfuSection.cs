using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Model FLOP utilisation of the embedding forward (no autograd, bidirectional, no LM head) of a Qwen2-0.5B-shaped
/// model at sequence 128 and 512, float32 and bfloat16: achieved FLOP/s divided by the GEMM peak measured in the
/// same run. Also the peak memory of the forward over the loaded weights, to show it is bounded by the batch.
/// </summary>
public static class MfuSection
{
    public static void Run(BenchContext ctx)
    {
        int layers = ctx.Quick ? 2 : QwenShape.FullLayers;
        Console.WriteLine($"MFU: Qwen2-0.5B shape ({layers} layers)");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            string dn = GemmSection.Name(dtype);
            // Without native bfloat16 (AVX2-only CPUs) bfloat16 matmuls are emulated and ~10x slower: fewer tokens.
            bool slow = dtype == ScalarType.BFloat16 && !Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16;
            var shapes = ctx.Quick || slow ? new (long B, long T)[] { (2, 128), (1, 512) } : [(8, 128), (2, 512)];
            Memory.ResetPeak();
            using var model = QwenShape.Create(layers, dtype);
            foreach (var (b, t) in shapes)
            {
                var gen = new TorchSharp.torch.Generator(1);
                using var ids = randint(0, QwenShape.Vocab, [b, t], generator: gen, dtype: ScalarType.Int64);
                using var mask = ones(b, t, dtype: ScalarType.Int64);
                Memory.ResetPeak();
                long before = Memory.RssBytes();
                var r = Timing.Measure(() =>
                {
                    using var noGrad = no_grad();
                    using var scope = NewDisposeScope();
                    model.Forward(ids, mask, AttentionMode.Bidirectional);
                }, ctx.Budget, minRepeats: slow ? 1 : 2, maxRepeats: 5);
                long peak = Memory.PeakBytes();
                double flops = QwenShape.ForwardFlops(b, t, layers);
                double achieved = flops / r.MedianSeconds;
                double mfu = achieved / ctx.GemmPeak[dn];
                ctx.Report.Add("Model FLOP utilisation (Qwen2-0.5B shape, random weights, forward)", $"{dn}, batch {b} x seq {t}", new()
                {
                    ["tokens/s"] = b * t / r.MedianSeconds,
                    ["GFLOP/s"] = achieved / 1e9,
                    ["MFU vs measured GEMM peak"] = mfu,
                    ["peak MiB over weights"] = Memory.Mib(peak - before),
                    ["seconds/forward"] = r.MedianSeconds,
                }, layers != QwenShape.FullLayers ? $"quick mode: {layers} of 24 layers" : null);
                ctx.Report.AddRatio($"MFU {dn}, seq {t}", mfu, "achieved forward FLOP/s / GEMM peak (same run)",
                    t >= 512 ? "attention (T² work, softmax/mask bandwidth) + GEMM efficiency" : "GEMM efficiency + elementwise ops (norms, RoPE, SiLU) bandwidth");
            }
        }
    }
}
