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

    public static Option<string> Backend() => new("--backend")
    {
        Description = "What runs the model: torch (TorchSharp, default) or onnx (ONNX Runtime; a folder's exported model.onnx, or the model exported in memory at load). A folder holding only model.onnx always runs on onnx.",
        DefaultValueFactory = _ => "torch",
    };

    public static Option<string> Device() => new("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };

    public static Option<int?> Threads() => NullableInt("--threads",
        $"CPU threads for libtorch, intra-op, 1 to this machine's cores ({Environment.ProcessorCount}) (default: all cores; 1 is often faster on a busy machine).");

    /// <summary>An integer flag whose value is parsed as a 64-bit number first, so a value beyond a 32-bit count
    /// ("2147483648") or not a whole number ("1e9") is one error under this flag, not a parse failure elsewhere.</summary>
    public static Option<int> Int(string name, string description, int defaultValue) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = r => r.Tokens.Count == 0 ? defaultValue : ParseInt(r, name) ?? defaultValue,
    };

    /// <inheritdoc cref="Int"/>
    public static Option<int?> NullableInt(string name, string description) => new(name)
    {
        Description = description,
        CustomParser = r => r.Tokens.Count == 0 ? null : ParseInt(r, name),
    };

    private static int? ParseInt(System.CommandLine.Parsing.ArgumentResult r, string name)
    {
        string text = r.Tokens[^1].Value;
        if (!long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v))
        {
            r.AddError($"{name} must be a whole number (got '{text}').");
            return null;
        }
        if (v is > int.MaxValue or < int.MinValue)
        {
            r.AddError($"{name} must be at most {int.MaxValue} (got {v}).");
            return null;
        }
        return (int)v;
    }

    /// <summary>Load options of the common flags, validated (so --threads 10000 or --dtype fp8 stop here, before any
    /// input is read); errors are shown under the flag by <see cref="CliRunner"/>.</summary>
    public static ModelLoadOptions LoadOptions(string dtype, string device, int? threads = null, string? backend = null)
    {
        var options = new ModelLoadOptions
        {
            DType = OptionNames.DType.Parse(dtype, "ModelLoadOptions.DType"),
            Device = device,
            Threads = threads,
            Backend = backend is null ? InferenceBackend.Torch : OptionNames.Backend.Parse(backend, "ModelLoadOptions.Backend"),
        };
        options.Validate();
        return options;
    }

    public static void ApplyThreads(int? threads)
    {
        if (threads is null) return;
        new ModelLoadOptions { Threads = threads }.Validate();
        UllmeRuntime.SetThreads(threads.Value);
    }

    public static PoolingMode? Pooling(string? value) => value is null ? null : OptionNames.Pooling.Parse(value, "EmbeddingOptions.Pooling");

    public static AttentionMode? Attention(string? value) => value is null ? null : OptionNames.Attention.Parse(value, "EmbeddingOptions.Attention");
}
