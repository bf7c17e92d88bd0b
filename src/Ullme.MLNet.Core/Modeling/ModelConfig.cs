using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A model's <c>config.json</c>, typed. Property names mirror Hugging Face's field names (snake_case in JSON), one
/// class for every supported architecture: fields an architecture does not use stay null.
/// </summary>
public sealed class ModelConfig
{
    /// <summary>The architectures this library implements, by HF <c>model_type</c>.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2", "phi3", "gemma2", "bert"];

    [JsonPropertyName("model_type")] public string? ModelType { get; set; }
    [JsonPropertyName("architectures")] public List<string>? Architectures { get; set; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; }
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; }
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; }
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; }
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; set; }
    [JsonPropertyName("head_dim")] public int? HeadDim { get; set; }
    [JsonPropertyName("hidden_act")] public string? HiddenAct { get; set; }
    /// <summary>Gemma2's name for the MLP activation (takes precedence over <see cref="HiddenAct"/> there).</summary>
    [JsonPropertyName("hidden_activation")] public string? HiddenActivation { get; set; }
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; }
    /// <summary>Phi-3: the pre-training context length (top level of the config, used by longrope).</summary>
    [JsonPropertyName("original_max_position_embeddings")] public int? OriginalMaxPositionEmbeddings { get; set; }
    [JsonPropertyName("initializer_range")] public double? InitializerRange { get; set; }
    [JsonPropertyName("rms_norm_eps")] public double? RmsNormEps { get; set; }
    [JsonPropertyName("layer_norm_eps")] public double? LayerNormEps { get; set; }
    [JsonPropertyName("rope_theta")] public double? RopeTheta { get; set; }
    [JsonPropertyName("rope_scaling"), JsonInclude] internal RopeScalingConfig? RopeScaling { get; set; }
    [JsonPropertyName("partial_rotary_factor")] public double? PartialRotaryFactor { get; set; }
    [JsonPropertyName("attention_bias")] public bool? AttentionBias { get; set; }
    [JsonPropertyName("mlp_bias")] public bool? MlpBias { get; set; }
    [JsonPropertyName("tie_word_embeddings")] public bool? TieWordEmbeddings { get; set; }
    [JsonPropertyName("sliding_window")] public int? SlidingWindow { get; set; }
    /// <summary>Qwen2: whether <see cref="SlidingWindow"/> is used at all.</summary>
    [JsonPropertyName("use_sliding_window")] public bool? UseSlidingWindow { get; set; }
    /// <summary>Qwen2: layers with index &gt;= this use sliding-window attention (when enabled).</summary>
    [JsonPropertyName("max_window_layers")] public int? MaxWindowLayers { get; set; }
    /// <summary>Newer configs list each layer's attention kind ("sliding_attention" / "full_attention").</summary>
    [JsonPropertyName("layer_types")] public List<string>? LayerTypes { get; set; }
    /// <summary>Decoders: dropout on the attention probabilities while training (HF <c>attention_dropout</c>; 0 when absent).</summary>
    [JsonPropertyName("attention_dropout")] public double? AttentionDropout { get; set; }
    [JsonPropertyName("attn_logit_softcapping")] public double? AttnLogitSoftcapping { get; set; }
    [JsonPropertyName("final_logit_softcapping")] public double? FinalLogitSoftcapping { get; set; }
    [JsonPropertyName("query_pre_attn_scalar")] public double? QueryPreAttnScalar { get; set; }
    [JsonPropertyName("bos_token_id")] public JsonNode? BosTokenIdRaw { get; set; }
    [JsonPropertyName("eos_token_id")] public JsonNode? EosTokenIdRaw { get; set; }
    [JsonPropertyName("pad_token_id")] public JsonNode? PadTokenIdRaw { get; set; }
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }

    // BERT-style encoders
    [JsonPropertyName("type_vocab_size")] public int? TypeVocabSize { get; set; }
    [JsonPropertyName("position_embedding_type")] public string? PositionEmbeddingType { get; set; }
    [JsonPropertyName("hidden_dropout_prob")] public double? HiddenDropoutProb { get; set; }
    [JsonPropertyName("attention_probs_dropout_prob")] public double? AttentionProbsDropoutProb { get; set; }

    /// <summary>Every field of the file, including those not typed above (kept so export writes them back).</summary>
    [JsonIgnore] public JsonObject Raw { get; private set; } = new();

    /// <summary>Where the config was read from (for error messages), or null.</summary>
    [JsonIgnore] public string? SourcePath { get; private set; }

    [JsonIgnore] public int? BosTokenId => FirstId(BosTokenIdRaw);
    /// <summary>All end-of-sequence ids (HF allows an int or a list).</summary>
    [JsonIgnore] public IReadOnlyList<int> EosTokenIds => AllIds(EosTokenIdRaw);
    [JsonIgnore] public int? PadTokenId => FirstId(PadTokenIdRaw);

    /// <summary>Per-head width: <c>head_dim</c> if given, else hidden / heads.</summary>
    [JsonIgnore] public int EffectiveHeadDim => HeadDim ?? (NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0);
    [JsonIgnore] public int EffectiveKeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;
    [JsonIgnore] public bool IsEncoder => ModelType == "bert";

    /// <summary>Largest <c>vocab_size</c> accepted (real vocabularies stop near 300k).</summary>
    public const int MaxVocabSize = 1 << 24;

    /// <summary>Largest <c>hidden_size</c> (and <c>head_dim</c>) accepted (the largest real models use 16k-25k).</summary>
    public const int MaxHiddenSize = 1 << 17;

    /// <summary>Largest <c>intermediate_size</c> accepted.</summary>
    public const int MaxIntermediateSize = 1 << 20;

    /// <summary>Largest <c>num_hidden_layers</c> accepted (the deepest real models have a few hundred).</summary>
    public const int MaxLayers = 4096;

    /// <summary>Largest <c>max_position_embeddings</c> accepted.</summary>
    public const int MaxPositions = 1 << 27;

    private static readonly JsonSerializerOptions Options = new()
    {
        NumberHandling = JsonNumberHandling.AllowReadingFromString | JsonNumberHandling.AllowNamedFloatingPointLiterals,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Reads <c>config.json</c> from a model folder or a file path.</summary>
    public static ModelConfig Load(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, "config.json") : folderOrFile;
        if (!IO.ModelFileGuard.Exists(path, IO.ModelFileGuard.ConfigFileMaxBytes))
            throw new UllmeException($"No config.json at '{path}'. A model folder needs config.json, the weights (*.safetensors) and tokenizer files.");
        return Parse(IO.ModelFileGuard.ReadAllText(path, IO.ModelFileGuard.ConfigFileMaxBytes), path);
    }

    /// <summary>Parses and validates config JSON; <paramref name="sourcePath"/> is used in error messages.</summary>
    public static ModelConfig Parse(string json, string sourcePath = "config.json")
    {
        JsonObject raw;
        ModelConfig config;
        try
        {
            raw = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, MaxDepth = IO.ModelFileGuard.ConfigMaxDepth }) as JsonObject
                ?? throw new UllmeException($"'{sourcePath}' is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{sourcePath}' is not valid config JSON: {e.Message}", e);
        }
        try
        {
            config = raw.Deserialize<ModelConfig>(Options) ?? throw new UllmeException($"'{sourcePath}' is empty.");
        }
        catch (JsonException e)
        {
            throw new UllmeException(WrongType(raw, e, sourcePath), e);
        }
        config.Raw = raw;
        config.SourcePath = sourcePath;
        config.Validate();
        return config;
    }

    /// <summary>"field \"x\" is 1e12, which is not ..." from a deserialisation error (its JSON path names the field).</summary>
    private static string WrongType(JsonObject raw, JsonException e, string sourcePath)
    {
        string path = e.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : e.Path ?? "?";
        JsonNode? node = raw;
        foreach (string part in path.Split('.'))
        {
            string name = part;
            int bracket = name.IndexOf('[');
            string? index = bracket >= 0 ? name[(bracket + 1)..].TrimEnd(']') : null;
            if (bracket >= 0) name = name[..bracket];
            node = node is JsonObject o && o.TryGetPropertyValue(name, out var child) ? child : null;
            if (index is not null) node = node is JsonArray a && int.TryParse(index, out int i) && i >= 0 && i < a.Count ? a[i] : null;
            if (node is null) break;
        }
        string value = node?.ToJsonString() ?? "this value";
        if (value.Length > 60) value = value[..60] + "…";
        string expected = typeof(ModelConfig).GetProperties().Concat(typeof(RopeScalingConfig).GetProperties())
            .FirstOrDefault(pr => pr.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false) is [JsonPropertyNameAttribute a]
                && a.Name == path.Split('.')[^1].Split('[')[0]) is { } prop ? Describe(prop.PropertyType) : "another type";
        return $"'{sourcePath}': field \"{path}\" is {value}, but it must be {expected}.";

        static string Describe(Type t)
        {
            t = Nullable.GetUnderlyingType(t) ?? t;
            if (t == typeof(int)) return "a 32-bit integer";
            if (t == typeof(double)) return "a number";
            if (t == typeof(bool)) return "true or false";
            if (t == typeof(string)) return "a string";
            if (t == typeof(List<string>)) return "a list of strings";
            if (t == typeof(List<double>)) return "a list of numbers";
            if (t == typeof(RopeScalingConfig)) return "an object";
            return "another type";
        }
    }

    /// <summary>Serialises the config back to HF JSON (untyped fields preserved, typed fields updated).</summary>
    public string ToJson()
    {
        var typed = JsonSerializer.SerializeToNode(this, Options)!.AsObject();
        var merged = (JsonObject)Raw.DeepClone();
        MergeTyped(merged, typed);
        return merged.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// Writes typed values over the raw ones. Nested objects (rope_scaling) are merged member by member so their
    /// untyped members survive; a typed member that is null, or a required int still 0, is only written when the key
    /// was already there (so no <c>"rope_type": null</c>, which HF would read as "no type", and no invented
    /// <c>"max_position_embeddings": 0</c>).
    /// </summary>
    private static void MergeTyped(JsonObject target, JsonObject typed)
    {
        foreach (var (key, value) in typed)
        {
            bool present = target.ContainsKey(key);
            if (!present && (value is null || (value is JsonValue v && v.TryGetValue<int>(out int i) && i == 0))) continue;
            if (value is JsonObject typedChild && target[key] is JsonObject rawChild)
                MergeTyped(rawChild, typedChild);
            else if (value is JsonObject fresh)
            {
                var child = new JsonObject();
                MergeTyped(child, fresh);
                target[key] = child;
            }
            else
                target[key] = value?.DeepClone();
        }
    }

    private void Validate()
    {
        string where = SourcePath ?? "config.json";
        if (string.IsNullOrWhiteSpace(ModelType))
            throw new UllmeException($"'{where}' has no \"model_type\". Supported: {string.Join(", ", SupportedModelTypes)}.");
        if (!SupportedModelTypes.Contains(ModelType))
            throw new UllmeException($"'{where}': model_type \"{ModelType}\" is not supported. Supported: {string.Join(", ", SupportedModelTypes)}.");
        Require(VocabSize, "vocab_size", MaxVocabSize);
        Require(HiddenSize, "hidden_size", MaxHiddenSize);
        Require(IntermediateSize, "intermediate_size", MaxIntermediateSize);
        Require(NumHiddenLayers, "num_hidden_layers", MaxLayers);
        Require(NumAttentionHeads, "num_attention_heads", HiddenSize, "hidden_size");
        if (NumKeyValueHeads is int kv) Require(kv, "num_key_value_heads", NumAttentionHeads, "num_attention_heads");
        if (HeadDim is int hd) Require(hd, "head_dim", MaxHiddenSize);
        if (MaxPositionEmbeddings < 0 || MaxPositionEmbeddings > MaxPositions)
            throw new UllmeException($"'{where}': \"max_position_embeddings\" is {MaxPositionEmbeddings}; it must lie in [1, {MaxPositions:N0}] (or be absent).");
        if (OriginalMaxPositionEmbeddings is < 1 or > MaxPositions)
            throw new UllmeException($"'{where}': \"original_max_position_embeddings\" is {OriginalMaxPositionEmbeddings}; it must lie in [1, {MaxPositions:N0}].");
        if (TypeVocabSize is int tv) Require(tv, "type_vocab_size", 1 << 16);
        if (SlidingWindow is < 1) throw new UllmeException($"'{where}': \"sliding_window\" is {SlidingWindow}; it must be positive (or null).");
        if (MaxWindowLayers is < 0) throw new UllmeException($"'{where}': \"max_window_layers\" is {MaxWindowLayers}; it must not be negative.");
        Positive(RmsNormEps, "rms_norm_eps");
        Positive(LayerNormEps, "layer_norm_eps");
        Positive(RopeTheta, "rope_theta");
        Positive(AttnLogitSoftcapping, "attn_logit_softcapping");
        Positive(FinalLogitSoftcapping, "final_logit_softcapping");
        Positive(QueryPreAttnScalar, "query_pre_attn_scalar");
        Positive(PartialRotaryFactor, "partial_rotary_factor");
        if (PartialRotaryFactor is > 1) throw new UllmeException($"'{where}': \"partial_rotary_factor\" is {PartialRotaryFactor}; it must lie in (0, 1].");
        if (InitializerRange is double ir && (!double.IsFinite(ir) || ir < 0))
            throw new UllmeException($"'{where}': \"initializer_range\" is {ir}; it must be a finite number, not negative.");
        Probability(HiddenDropoutProb, "hidden_dropout_prob");
        Probability(AttentionProbsDropoutProb, "attention_probs_dropout_prob");
        Probability(AttentionDropout, "attention_dropout");
        if (AttentionDropout is >= 1) throw new UllmeException($"'{where}': \"attention_dropout\" is {AttentionDropout}; it must be below 1.");
        if (EffectiveKeyValueHeads <= 0 || NumAttentionHeads % EffectiveKeyValueHeads != 0)
            throw new UllmeException($"'{where}': num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({EffectiveKeyValueHeads}).");
        if (HeadDim is null && HiddenSize % NumAttentionHeads != 0)
            throw new UllmeException($"'{where}': hidden_size ({HiddenSize}) is not divisible by num_attention_heads ({NumAttentionHeads}) and no head_dim is given.");
        RopeScaling?.Validate(where);
        CheckIds(BosTokenIdRaw, "bos_token_id");
        CheckIds(EosTokenIdRaw, "eos_token_id");
        CheckIds(PadTokenIdRaw, "pad_token_id");

        void CheckIds(JsonNode? node, string name)
        {
            bool ok = node switch
            {
                null => true,
                JsonArray a => a.All(x => x is JsonValue xv && xv.TryGetValue<int>(out _)),
                JsonValue v => v.TryGetValue<int>(out _),
                _ => false,
            };
            if (!ok)
                throw new UllmeException($"'{where}': \"{name}\" must be a token id (an integer), a list of ids or null, not {node!.ToJsonString()}.");
        }

        void Require(int value, string name, int max, string? maxName = null)
        {
            if (value <= 0) throw new UllmeException($"'{where}': \"{name}\" is missing or not positive (got {value}).");
            if (value > max)
                throw new UllmeException(maxName is null
                    ? $"'{where}': \"{name}\" is {value:N0}, more than the {max:N0} a real model has (corrupt or hostile config)."
                    : $"'{where}': \"{name}\" is {value:N0}, more than {maxName} ({max:N0}).");
        }

        void Positive(double? value, string name)
        {
            if (value is double v && !(double.IsFinite(v) && v > 0))
                throw new UllmeException($"'{where}': \"{name}\" is {v}; it must be a finite number greater than 0.");
        }

        void Probability(double? value, string name)
        {
            if (value is double v && !(v >= 0 && v <= 1))
                throw new UllmeException($"'{where}': \"{name}\" is {v}; it must lie in [0, 1].");
        }
    }

    private static int? FirstId(JsonNode? node) => AllIds(node) is [var first, ..] ? first : null;

    private static IReadOnlyList<int> AllIds(JsonNode? node) => node switch
    {
        null => [],
        JsonArray a => a.Where(x => x is not null).Select(x => x!.GetValue<int>()).ToArray(),
        JsonValue v when v.TryGetValue<int>(out int i) => [i],
        _ => [],
    };
}

/// <summary>The <c>rope_scaling</c> block of a config.</summary>
internal sealed class RopeScalingConfig
{
    /// <summary>The kinds of RoPE scaling implemented.</summary>
    public static readonly IReadOnlyList<string> SupportedTypes = ["default", "linear", "llama3", "longrope", "su", "dynamic"];

    [JsonPropertyName("rope_type")] public string? RopeType { get; set; }
    /// <summary>Older configs name the kind "type".</summary>
    [JsonPropertyName("type")] public string? Type { get; set; }
    [JsonPropertyName("factor")] public double? Factor { get; set; }
    [JsonPropertyName("low_freq_factor")] public double? LowFreqFactor { get; set; }
    [JsonPropertyName("high_freq_factor")] public double? HighFreqFactor { get; set; }
    [JsonPropertyName("original_max_position_embeddings")] public int? OriginalMaxPositionEmbeddings { get; set; }
    [JsonPropertyName("short_factor")] public List<double>? ShortFactor { get; set; }
    [JsonPropertyName("long_factor")] public List<double>? LongFactor { get; set; }
    /// <summary>longrope: multiplier of cos/sin; when absent it is derived from the context extension.</summary>
    [JsonPropertyName("attention_factor")] public double? AttentionFactor { get; set; }

    /// <summary>The kind, whichever of the two fields names it.</summary>
    [JsonIgnore] public string Kind => RopeType ?? Type ?? "default";

    internal void Validate(string where)
    {
        if (!SupportedTypes.Contains(Kind))
            throw new UllmeException($"'{where}': rope_scaling type \"{Kind}\" is not supported. Supported: {string.Join(", ", SupportedTypes)}.");
        if (Kind == "llama3" && (Factor is null || LowFreqFactor is null || HighFreqFactor is null || OriginalMaxPositionEmbeddings is null))
            throw new UllmeException($"'{where}': rope_scaling type \"llama3\" needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings.");
        if (Kind is "longrope" or "su" && (ShortFactor is null || LongFactor is null))
            throw new UllmeException($"'{where}': rope_scaling type \"{Kind}\" needs \"short_factor\" and \"long_factor\" lists.");
        if (Kind is "linear" or "dynamic" && Factor is null)
            throw new UllmeException($"'{where}': rope_scaling type \"{Kind}\" needs \"factor\".");
        if (Kind is "longrope" or "su" && (ShortFactor is null || LongFactor is null))
            throw new UllmeException($"'{where}': rope_scaling type \"{Kind}\" needs \"short_factor\" and \"long_factor\".");
        Positive(Factor, "factor");
        Positive(LowFreqFactor, "low_freq_factor");
        Positive(HighFreqFactor, "high_freq_factor");
        Positive(AttentionFactor, "attention_factor");
        if (OriginalMaxPositionEmbeddings is < 1 or > ModelConfig.MaxPositions)
            throw new UllmeException($"'{where}': \"rope_scaling.original_max_position_embeddings\" is {OriginalMaxPositionEmbeddings}; it must lie in [1, {ModelConfig.MaxPositions:N0}].");
        for (int i = 0; i < (ShortFactor?.Count ?? 0); i++) Positive(ShortFactor![i], $"short_factor[{i}]");
        for (int i = 0; i < (LongFactor?.Count ?? 0); i++) Positive(LongFactor![i], $"long_factor[{i}]");

        void Positive(double? value, string name)
        {
            if (value is double v && !(double.IsFinite(v) && v > 0))
                throw new UllmeException($"'{where}': \"rope_scaling.{name}\" is {v}; it must be a finite number greater than 0.");
        }
    }
}
