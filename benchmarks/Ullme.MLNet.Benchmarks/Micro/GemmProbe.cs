using System.Diagnostics;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>`probe-gemm`: GFLOP/s of the matmul variants a model uses, per dtype (diagnoses slow kernel paths).</summary>
public static class GemmProbe
{
    public static int Run()
    {
        Console.WriteLine($"threads {Ullme.MLNet.Inference.UllmeRuntime.IntraOpThreads}, OMP_WAIT_POLICY {Ullme.MLNet.Inference.UllmeRuntime.OmpWaitPolicy}");
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var scope = NewDisposeScope();
            var x2 = randn(1024, 896).to(dt);
            var x3 = randn(8, 128, 896).to(dt);
            var w = randn(4864, 896).to(dt);
            var wt = w.t().contiguous();
            double f = 2.0 * 1024 * 896 * 4864;
            void T(string name, Func<Tensor> op)
            {
                op().Dispose();
                var sw = Stopwatch.StartNew();
                int n = 0;
                while (sw.Elapsed.TotalSeconds < 0.5 || n < 2) { op().Dispose(); n++; }
                Console.WriteLine($"{dt} {name}: {f * n / sw.Elapsed.TotalSeconds / 1e9:F1} GFLOP/s");
            }
            T("linear 2D", () => nn.functional.linear(x2, w));
            T("linear 3D", () => nn.functional.linear(x3, w));
            T("mm x @ w.t()", () => x2.mm(w.t()));
            T("mm x @ wt(contig)", () => x2.mm(wt));
            T("matmul 3D @ wt", () => x3.matmul(wt));
        }
        return 0;
    }
}
