using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Benchmarks.Sections;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>`probe-memory B T layers...`: peak RSS of one no-grad forward of the Qwen2-0.5B shape over the loaded
/// weights, per layer count (if it grows with the layer count, activations outlive their layer).</summary>
public static class MemoryProbe
{
    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int malloc_trim(nuint pad);

    public static int Run(string[] args)
    {
        long b = long.Parse(args[0]), t = long.Parse(args[1]);
        Console.WriteLine($"mmap threshold installed: {Ullme.MLNet.Inference.UllmeRuntime.MmapThresholdInstalled}");
        foreach (int layers in args.Skip(2).Select(int.Parse))
        {
            using var model = QwenShape.Create(layers, ScalarType.Float32);
            using var ids = randint(0, 1000, [b, t], dtype: ScalarType.Int64);
            using var mask = ones(b, t, dtype: ScalarType.Int64);
            Memory.ResetPeak();
            long before = Memory.RssBytes();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using (no_grad())
            using (NewDisposeScope())
                model.Forward(ids, mask, AttentionMode.Bidirectional);
            long after = Memory.RssBytes();
            malloc_trim(0);
            Console.WriteLine($"{layers} layers, [{b}, {t}]: peak +{Memory.Mib(Memory.PeakBytes() - before)} MiB over weights, {sw.Elapsed.TotalSeconds:F1} s, after {Memory.Mib(after - before)} MiB, after malloc_trim {Memory.Mib(Memory.RssBytes() - before)} MiB");
        }
        return 0;
    }
}
