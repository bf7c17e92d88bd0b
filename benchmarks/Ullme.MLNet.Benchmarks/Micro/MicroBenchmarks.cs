using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>BenchmarkDotNet entry point. In-process toolchain: libtorch's native library is patched in this output
/// folder only (see Ullme.MLNet.targets), so benchmarks must not be rebuilt elsewhere.</summary>
public static class MicroBenchmarks
{
    public static int Run(string[] args)
    {
        var config = DefaultConfig.Instance
            .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance))
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
        BenchmarkSwitcher.FromAssembly(typeof(MicroBenchmarks).Assembly).Run(args, config);
        return 0;
    }
}

/// <summary>Attention kernels at MiniLM's shape (12 heads of 32, batch 32): SDPA with no mask, a broadcast key
/// mask [B,1,1,T], a full additive mask [B,1,T,T], a boolean mask, and explicit softmax(QKᵀ)V.</summary>
[MemoryDiagnoser]
public class AttentionBenchmarks
{
    private Tensor _q = null!, _k = null!, _v = null!, _keyMask = null!, _fullMask = null!, _boolMask = null!;

    [Params(64, 256)]
    public int T { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        manual_seed(0);
        _q = randn(32, 12, T, 32); _k = randn(32, 12, T, 32); _v = randn(32, 12, T, 32);
        var valid = arange(T).lt(T - 7).view(1, 1, 1, T).expand(32, 1, 1, T);
        _keyMask = zeros(32, 1, 1, T).masked_fill(valid.logical_not(), float.MinValue);
        _fullMask = _keyMask.expand(32, 1, T, T).contiguous();
        _boolMask = valid.expand(32, 1, T, T).contiguous();
    }

    [Benchmark(Baseline = true)] public void SdpaNoMask() { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(_q, _k, _v); }
    [Benchmark] public void SdpaKeyMask() { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(_q, _k, _v, _keyMask); }
    [Benchmark] public void SdpaFullAdditiveMask() { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(_q, _k, _v, _fullMask); }
    [Benchmark] public void SdpaBoolMask() { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(_q, _k, _v, _boolMask); }
    [Benchmark] public void Explicit() { using var s = NewDisposeScope(); (_q.matmul(_k.transpose(2, 3)) / Math.Sqrt(32) + _keyMask).softmax(-1).matmul(_v); }
}

/// <summary>Masked mean pooling of [32, T, 384] states (the engine's per-batch pooling).</summary>
[MemoryDiagnoser]
public class PoolingBenchmarks
{
    private Tensor _hidden = null!, _mask = null!;

    [Params(64, 256)]
    public int T { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _hidden = randn(32, T, 384);
        _mask = arange(T).lt(T - 5).view(1, T).expand(32, T).to(ScalarType.Int64);
    }

    [Benchmark] public void MeanPool() { using var s = NewDisposeScope(); Pooler.Normalize(Pooler.Pool(_hidden, _mask, _mask, PoolingMode.Mean)); }
}
