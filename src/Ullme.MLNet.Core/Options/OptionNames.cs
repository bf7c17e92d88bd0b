using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet;

/// <summary>
/// The names of one enum's values as a user types them (CLI flags, JSON files such as <c>ullme.json</c>, server
/// requests): one canonical name per value (written back, shown in help) and accepted aliases. Parsing ignores case,
/// surrounding spaces and '_' versus '-'.
/// </summary>
internal sealed class EnumNames<T> where T : struct, Enum
{
    private readonly (T Value, string Name)[] _canonical;
    private readonly Dictionary<string, T> _accepted = new(StringComparer.Ordinal);

    public EnumNames(string what, params (T Value, string Name, string[] Aliases)[] entries)
    {
        What = what;
        _canonical = entries.Select(e => (e.Value, e.Name)).ToArray();
        foreach (var (value, name, aliases) in entries)
            foreach (string n in aliases.Prepend(name)) _accepted[Key(n)] = value;
    }

    /// <summary>What the values are, for messages ("pooling").</summary>
    public string What { get; }

    /// <summary>The canonical names, in declaration order.</summary>
    public IReadOnlyList<string> Names => _canonical.Select(c => c.Name).ToArray();

    /// <summary>"a, b or c".</summary>
    public string Choices => Names.Count == 1 ? Names[0] : string.Join(", ", Names.Take(Names.Count - 1)) + " or " + Names[^1];

    public string ToName(T value)
    {
        foreach (var (v, n) in _canonical) if (EqualityComparer<T>.Default.Equals(v, value)) return n;
        return value.ToString();
    }

    public bool TryParse(string? text, out T value)
    {
        value = default;
        return text is not null && _accepted.TryGetValue(Key(text), out value);
    }

    /// <summary>Parses <paramref name="text"/>; unknown: an option <see cref="UllmeException"/> for
    /// <paramref name="option"/> listing the accepted names.</summary>
    public T Parse(string text, string option)
    {
        if (TryParse(text, out T value)) return value;
        throw OptionCheck.Error(option, $"'{text}' is not a known {What}: use {Choices}");
    }

    private static string Key(string s) => s.Trim().ToLowerInvariant().Replace('_', '-');
}

/// <summary>The one table of the engine's enum names (CLI and JSON spellings). Training and evaluation keep theirs
/// next to their enums with the same <see cref="EnumNames{T}"/>.</summary>
internal static class OptionNames
{
    public static readonly EnumNames<PoolingMode> Pooling = new("pooling",
        (PoolingMode.Mean, "mean", []),
        (PoolingMode.WeightedMean, "weighted-mean", ["weightedmean"]),
        (PoolingMode.LastToken, "last-token", ["lasttoken", "last", "eos"]),
        (PoolingMode.FirstToken, "first-token", ["firsttoken", "first", "cls"]));

    public static readonly EnumNames<AttentionMode> Attention = new("attention",
        (AttentionMode.Bidirectional, "bidirectional", ["bi"]),
        (AttentionMode.Causal, "causal", []));

    public static readonly EnumNames<ModelDType> DType = new("dtype",
        (ModelDType.Float32, "float32", ["fp32", "f32"]),
        (ModelDType.BFloat16, "bfloat16", ["bf16"]));

    public static readonly EnumNames<InferenceBackend> Backend = new("backend",
        (InferenceBackend.Torch, "torch", ["torchsharp", "libtorch"]),
        (InferenceBackend.OnnxRuntime, "onnx", ["onnxruntime", "ort"]));

    public static readonly EnumNames<RerankBy> RerankBy = new("relevance signal",
        (Inference.RerankBy.Representation, "representation", ["rep", "cosine"]),
        (Inference.RerankBy.Generation, "generation", ["gen"]),
        (Inference.RerankBy.Mix, "mix", ["mixed"]));

    public static readonly EnumNames<GenerationScore> GenerationScore = new("generation score",
        (Inference.GenerationScore.Mean, "mean", []),
        (Inference.GenerationScore.Sum, "sum", []));
}
