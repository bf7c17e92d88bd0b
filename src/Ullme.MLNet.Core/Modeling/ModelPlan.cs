using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>One parameter the backbone of a config will have: its name (the checkpoint key), shape, and the
/// config fields its shape comes from (for error messages).</summary>
internal sealed record PlannedTensor(string Name, long[] Shape, string Fields)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));
}

/// <summary>
/// The parameters the backbone of a <see cref="ModelConfig"/> will have, worked out from the config alone, without
/// allocating anything. Loading checks this plan against the safetensors headers (every tensor present, with the
/// planned shape; nothing unexpected) and against the memory available, BEFORE the module is built: a config that
/// disagrees with its weights (<c>num_hidden_layers</c> 1e6 next to a 5-layer checkpoint) is refused in
/// milliseconds instead of allocating the config's sizes. A test keeps the plan equal to the modules'
/// <c>state_dict()</c> for every architecture.
/// </summary>
internal sealed partial class ModelPlan
{
    private const int MaxListed = 5;

    private ModelPlan(ModelConfig config, List<PlannedTensor> tensors, Func<string, string> mapKey, Func<string, bool> isIgnorable, bool createdAsFloat32)
    {
        Config = config;
        Tensors = tensors;
        MapKey = mapKey;
        IsIgnorable = isIgnorable;
        CreatedAsFloat32 = createdAsFloat32;
    }

    public ModelConfig Config { get; }

    /// <summary>Every parameter (tied aliases once), in module order.</summary>
    public IReadOnlyList<PlannedTensor> Tensors { get; }

    /// <summary>Checkpoint key → parameter name (<see cref="EmbeddingBackbone.MapCheckpointKey"/>).</summary>
    public Func<string, string> MapKey { get; }

    /// <summary><see cref="EmbeddingBackbone.IsIgnorableCheckpointKey"/>.</summary>
    public Func<string, bool> IsIgnorable { get; }

    /// <summary>True when the module is first created in float32 and converted afterwards (BERT), so loading in
    /// another dtype briefly holds both.</summary>
    public bool CreatedAsFloat32 { get; }

    private string Where => Config.SourcePath ?? "config.json";

    /// <summary>The plan of a validated config (decoders through <see cref="ArchitectureTraits"/>, BERT directly).</summary>
    public static ModelPlan For(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.IsEncoder ? ForBert(config) : ForDecoder(config);
    }

    private static ModelPlan ForDecoder(ModelConfig config)
    {
        var t = ArchitectureTraits.From(config);
        long h = t.HiddenSize, v = t.VocabSize, i = t.IntermediateSize;
        long q = (long)t.NumHeads * t.HeadDim, kv = (long)t.NumKeyValueHeads * t.HeadDim;
        var list = new List<PlannedTensor>();
        void Add(string name, string fields, params long[] shape) => list.Add(new PlannedTensor(name, shape, fields));

        Add("model.embed_tokens.weight", "vocab_size x hidden_size", v, h);
        for (int l = 0; l < t.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            const string qFields = "num_attention_heads * head_dim x hidden_size";
            const string kvFields = "num_key_value_heads * head_dim x hidden_size";
            if (t.FusedQkv)
            {
                Add(p + "self_attn.qkv_proj.weight", "(num_attention_heads + 2 * num_key_value_heads) * head_dim x hidden_size", q + 2 * kv, h);
                if (t.QkvBias) Add(p + "self_attn.qkv_proj.bias", "(num_attention_heads + 2 * num_key_value_heads) * head_dim", q + 2 * kv);
            }
            else
            {
                Add(p + "self_attn.q_proj.weight", qFields, q, h);
                if (t.QkvBias) Add(p + "self_attn.q_proj.bias", "num_attention_heads * head_dim", q);
                Add(p + "self_attn.k_proj.weight", kvFields, kv, h);
                if (t.QkvBias) Add(p + "self_attn.k_proj.bias", "num_key_value_heads * head_dim", kv);
                Add(p + "self_attn.v_proj.weight", kvFields, kv, h);
                if (t.QkvBias) Add(p + "self_attn.v_proj.bias", "num_key_value_heads * head_dim", kv);
            }
            Add(p + "self_attn.o_proj.weight", "hidden_size x num_attention_heads * head_dim", h, q);
            if (t.OutputBias) Add(p + "self_attn.o_proj.bias", "hidden_size", h);
            if (t.FusedGateUp)
            {
                Add(p + "mlp.gate_up_proj.weight", "2 * intermediate_size x hidden_size", 2 * i, h);
                if (t.MlpBias) Add(p + "mlp.gate_up_proj.bias", "2 * intermediate_size", 2 * i);
            }
            else
            {
                Add(p + "mlp.gate_proj.weight", "intermediate_size x hidden_size", i, h);
                if (t.MlpBias) Add(p + "mlp.gate_proj.bias", "intermediate_size", i);
                Add(p + "mlp.up_proj.weight", "intermediate_size x hidden_size", i, h);
                if (t.MlpBias) Add(p + "mlp.up_proj.bias", "intermediate_size", i);
            }
            Add(p + "mlp.down_proj.weight", "hidden_size x intermediate_size", h, i);
            if (t.MlpBias) Add(p + "mlp.down_proj.bias", "hidden_size", h);
            Add(p + "input_layernorm.weight", "hidden_size", h);
            Add(p + "post_attention_layernorm.weight", "hidden_size", h);
            if (t.SandwichNorms)
            {
                Add(p + "pre_feedforward_layernorm.weight", "hidden_size", h);
                Add(p + "post_feedforward_layernorm.weight", "hidden_size", h);
            }
        }
        Add("model.norm.weight", "hidden_size", h);
        if (!t.TieWordEmbeddings) Add("lm_head.weight", "vocab_size x hidden_size", v, h);
        bool tied = t.TieWordEmbeddings;
        return new ModelPlan(config, list, k => k, k => DecoderModel.IsIgnorableKey(k, tied), createdAsFloat32: false);
    }

    private static ModelPlan ForBert(ModelConfig config)
    {
        long h = config.HiddenSize, i = config.IntermediateSize;
        var list = new List<PlannedTensor>();
        void Add(string name, string fields, params long[] shape) => list.Add(new PlannedTensor(name, shape, fields));
        void Norm(string prefix)
        {
            Add(prefix + "LayerNorm.weight", "hidden_size", h);
            Add(prefix + "LayerNorm.bias", "hidden_size", h);
        }

        Add("embeddings.word_embeddings.weight", "vocab_size x hidden_size", config.VocabSize, h);
        Add("embeddings.position_embeddings.weight", "max_position_embeddings x hidden_size", config.MaxPositionEmbeddings, h);
        Add("embeddings.token_type_embeddings.weight", "type_vocab_size x hidden_size", config.TypeVocabSize ?? 2, h);
        Norm("embeddings.");
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"encoder.layer.{l}.";
            foreach (string proj in new[] { "query", "key", "value" })
            {
                Add(p + $"attention.self.{proj}.weight", "hidden_size x hidden_size", h, h);
                Add(p + $"attention.self.{proj}.bias", "hidden_size", h);
            }
            Add(p + "attention.output.dense.weight", "hidden_size x hidden_size", h, h);
            Add(p + "attention.output.dense.bias", "hidden_size", h);
            Norm(p + "attention.output.");
            Add(p + "intermediate.dense.weight", "intermediate_size x hidden_size", i, h);
            Add(p + "intermediate.dense.bias", "intermediate_size", i);
            Add(p + "output.dense.weight", "hidden_size x intermediate_size", h, i);
            Add(p + "output.dense.bias", "hidden_size", h);
            Norm(p + "output.");
        }
        return new ModelPlan(config, list, BertEncoder.MapKey, BertEncoder.IsIgnorableKey, createdAsFloat32: true);
    }

    /// <summary>Bytes the parameters take in <paramref name="dtype"/>.</summary>
    public long ParameterBytes(ScalarType dtype)
    {
        long size = ElementSize(dtype);
        long total = 0;
        try
        {
            foreach (var t in Tensors) total = checked(total + checked(t.ElementCount * size));
        }
        catch (OverflowException)
        {
            return long.MaxValue;
        }
        return total;
    }

    /// <summary>Peak bytes while loading into <paramref name="dtype"/>: the parameters (plus their float32 originals
    /// for modules created in float32) plus one conversion buffer the size of the largest stored tensor.</summary>
    public long LoadingBytes(ScalarType dtype, long largestStoredTensorBytes)
    {
        long bytes = ParameterBytes(dtype);
        if (CreatedAsFloat32 && dtype != ScalarType.Float32) bytes = SaturatingAdd(bytes, ParameterBytes(ScalarType.Float32));
        return SaturatingAdd(bytes, largestStoredTensorBytes);
    }

    /// <summary>
    /// Checks the plan against the tensors of the checkpoint's headers (<paramref name="stored"/>: key, shape and
    /// file of each): every planned tensor present with its planned shape, nothing unexpected. Throws one
    /// <see cref="UllmeException"/> that names config.json and the fields at fault, and the weights file.
    /// </summary>
    public void CheckAgainst(IReadOnlyList<(string Key, long[] Shape, string File)> stored, string description)
    {
        var byName = new Dictionary<string, (string Key, long[] Shape, string File)>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        foreach (var s in stored)
        {
            if (IsIgnorable(s.Key)) continue;
            string name = MapKey(s.Key);
            if (IsIgnorable(name)) continue;
            byName.TryAdd(name, s);
        }

        // A layer count that disagrees is the most likely (and the most dangerous) mismatch: say it first.
        int planned = Config.NumHiddenLayers;
        var storedLayers = byName.Keys.Select(k => LayerIndex().Match(k)).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].ValueSpan, System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();
        if (storedLayers.Count != planned || (storedLayers.Count > 0 && storedLayers.Max() != planned - 1))
            throw new UllmeException($"'{Where}' does not match its weights: \"num_hidden_layers\" is {planned:N0}, but {description} holds {storedLayers.Count:N0} layers" +
                (storedLayers.Count > 0 ? $" (indices {storedLayers.Min()}..{storedLayers.Max()})" : "") + ".");

        var problems = new List<string>();
        int count = 0;
        var plannedNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in Tensors)
        {
            plannedNames.Add(p.Name);
            if (!byName.TryGetValue(p.Name, out var s))
            {
                if (count++ < MaxListed) problems.Add($"tensor '{p.Name}' ({p.Fields} = {SafeTensorInfo.FormatShape(p.Shape)}) is missing from {description}");
                continue;
            }
            if (!s.Shape.SequenceEqual(p.Shape))
            {
                if (count++ < MaxListed)
                    problems.Add($"tensor '{s.Key}' in '{s.File}' has shape {SafeTensorInfo.FormatShape(s.Shape)}, but the config's {p.Fields} give {SafeTensorInfo.FormatShape(p.Shape)}");
            }
        }
        foreach (var (name, s) in byName)
        {
            if (plannedNames.Contains(name)) continue;
            if (count++ < MaxListed) unexpected.Add($"tensor '{s.Key}' in '{s.File}' has no place in the model the config describes");
        }
        problems.AddRange(unexpected);
        if (count == 0) return;
        if (count > MaxListed) problems.Add($"and {count - MaxListed} more");
        throw new UllmeException($"'{Where}' does not match its weights in {description} ({count} problem{(count == 1 ? "" : "s")}): {string.Join("; ", problems)}.");
    }

    /// <summary>
    /// Refuses a load that needs more memory than <paramref name="availableBytes"/> (see
    /// <see cref="AvailableMemory"/>), naming the config's sizes.
    /// </summary>
    public void CheckMemory(ScalarType dtype, long largestStoredTensorBytes, long availableBytes, string availableSource)
    {
        long needed = LoadingBytes(dtype, largestStoredTensorBytes);
        if (needed <= availableBytes) return;
        long parameters = Tensors.Aggregate(0L, (a, t) => SaturatingAdd(a, t.ElementCount));
        throw new UllmeException($"'{Where}' describes a model of {parameters:N0} parameters (vocab_size {Config.VocabSize:N0}, hidden_size {Config.HiddenSize:N0}, " +
            $"intermediate_size {Config.IntermediateSize:N0}, num_hidden_layers {Config.NumHiddenLayers:N0}): loading it as {dtype} needs about {Gb(needed)} of memory, " +
            $"but only {Gb(availableBytes)} is available ({availableSource}). Load it as bfloat16, on another device, or on a larger machine.");
    }

    /// <summary>
    /// Memory this process may still use: the smaller of the GC's limit (physical memory or the container's limit,
    /// <see cref="GCMemoryInfo.TotalAvailableMemoryBytes"/>) and, on Linux, MemAvailable of /proc/meminfo.
    /// </summary>
    public static (long Bytes, string Source) AvailableMemory()
    {
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        (long Bytes, string Source) best = (total > 0 ? total : long.MaxValue, "the memory limit the .NET runtime sees");
        try
        {
            if (File.Exists("/proc/meminfo"))
                foreach (string line in File.ReadLines("/proc/meminfo"))
                {
                    if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
                    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (parts.Length >= 2 && long.TryParse(parts[1], out long kb) && kb > 0 && kb * 1024 < best.Bytes)
                        best = (kb * 1024, "MemAvailable in /proc/meminfo");
                    break;
                }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return best;
    }

    private static long ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Int16 => 2,
        _ => 1,
    };

    private static long SaturatingAdd(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    private static string Gb(long bytes) => $"{bytes / (double)(1L << 30):0.##} GiB";

    [GeneratedRegex(@"^(?:model\.layers|encoder\.layer)\.(\d{1,9})\.", RegexOptions.CultureInvariant)]
    private static partial Regex LayerIndex();
}
