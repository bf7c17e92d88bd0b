using System.CommandLine;
using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.Cli.Commands;

/// <summary>Options shared by several commands, parsed in one place.</summary>
internal static class CommonOptions
{
    public static Option<string> Model(string description = "A Hugging Face model folder, a Hugging Face id (org/name[@revision], cached or downloaded), or 'default' (all-MiniLM-L6-v2, bundled).") =>
        new("--model", "-m") { Description = description, DefaultValueFactory = _ => UllmeModel.DefaultModelName };

    public static Option<string> DType() => new("--dtype") { Description = "Weights and compute precision: float32 or bfloat16.", DefaultValueFactory = _ => "float32" };

    public static Option<string> Device() => new("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };

    public static Option<int?> Threads() => new("--threads") { Description = "CPU threads for libtorch, intra-op (default: all cores; 1 is often faster on a busy machine)." };

    public static ModelLoadOptions LoadOptions(string dtype, string device) => new()
    {
        DType = dtype.Trim().ToLowerInvariant() switch
        {
            "float32" or "fp32" or "f32" => ModelDType.Float32,
            "bfloat16" or "bf16" => ModelDType.BFloat16,
            _ => throw new UllmeException($"--dtype '{dtype}' is not supported. Use float32 or bfloat16."),
        },
        Device = device,
    };

    public static void ApplyThreads(int? threads)
    {
        if (threads is null) return;
        if (threads < 1) throw new UllmeException($"--threads must be at least 1 (got {threads}).");
        UllmeRuntime.SetThreads(threads.Value);
    }

    public static PoolingMode? Pooling(string? value) => value is null ? null : Pooler.Parse(value);

    public static AttentionMode? Attention(string? value) => value is null ? null : UllmeModel.ParseAttention(value);
}
