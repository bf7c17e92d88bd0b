using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tokenization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

public sealed partial class UllmeModel
{
    /// <summary>Decoders default to this many tokens per text (their position limits are far larger than an
    /// embedding needs, and attention cost grows with the square of the length).</summary>
    public const int DecoderDefaultMaxLength = 512;

    /// <summary>Tokenizer and sentence-transformers files copied when a model folder is saved.</summary>
    private static readonly string[] TokenizerFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.txt",
        "vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "added_tokens.json", "generation_config.json",
    ];

    /// <summary>
    /// Loads a Hugging Face model folder (config.json, model.safetensors or sharded safetensors with
    /// model.safetensors.index.json, tokenizer files), or <see cref="DefaultModelName"/> (or null/empty) for the
    /// bundled all-MiniLM-L6-v2.
    /// </summary>
    public static UllmeModel Load(string? modelPathOrDefault, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        if (options.Threads is int threads)
        {
            if (threads < 1) throw new UllmeException($"ModelLoadOptions.Threads must be at least 1 (got {threads}).");
            UllmeRuntime.SetThreads(threads);
        }
        string folder;
        string modelId;
        if (string.IsNullOrWhiteSpace(modelPathOrDefault) || modelPathOrDefault == DefaultModelName)
        {
            (folder, modelId) = DefaultModelLocator.EnsureFolder();
        }
        else
        {
            folder = Path.GetFullPath(modelPathOrDefault);
            if (File.Exists(folder)) folder = Path.GetDirectoryName(folder)!;
            if (!Directory.Exists(folder))
                throw new UllmeException($"Model folder '{modelPathOrDefault}' does not exist (give a Hugging Face model folder or 'default').");
            modelId = ReadModelId(folder);
        }

        var device = DeviceSelector.Parse(options.Device);
        var dtype = DeviceSelector.ToScalarType(options.DType);
        var config = ModelConfig.Load(folder);
        var tokenizer = TokenizerLoader.Load(folder);
        var backbone = BackboneFactory.CreateForLoading(config, dtype, device);
        try
        {
            CheckpointLoader.Load(backbone, folder, dtype, device);
            backbone.eval();
        }
        catch
        {
            backbone.Dispose();
            throw;
        }
        var defaults = ReadDefaults(folder, config);
        return new UllmeModel(config, tokenizer, backbone, defaults, options, modelId, folder, device, dtype);
    }

    /// <summary>
    /// Writes a self-contained Hugging Face folder: config.json, model.safetensors (current weights, current
    /// dtype), the tokenizer files, and the embedding settings in the sentence-transformers layout (modules.json,
    /// 1_Pooling/config.json, sentence_bert_config.json) plus ullme.json (attention mode), so that
    /// <see cref="Load"/> reads back an identical model and Python sentence-transformers can load it too.
    /// </summary>
    public void SaveFolder(string folder, EmbeddingDefaults? defaults = null)
    {
        defaults ??= Defaults;
        Directory.CreateDirectory(folder);
        var config = ModelConfig.Parse(Config.ToJson(), Config.SourcePath ?? "config.json");
        config.TorchDtype = ScalarType == ScalarType.BFloat16 ? "bfloat16" : "float32";
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJson());

        var tensors = new List<KeyValuePair<string, Tensor>>();
        using (var scope = NewDisposeScope())
        {
            foreach (var (name, tensor) in Backbone.state_dict())
                tensors.Add(new(name, tensor.detach().cpu().contiguous()));
            SafeTensors.Save(Path.Combine(folder, "model.safetensors"), tensors,
                new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "Ullme.MLNet" });
        }

        if (!string.Equals(Path.GetFullPath(folder), SourceFolder, StringComparison.Ordinal))
            foreach (string file in TokenizerFiles)
            {
                string src = Path.Combine(SourceFolder, file);
                if (File.Exists(src)) File.Copy(src, Path.Combine(folder, file), overwrite: true);
            }
        WriteSentenceTransformersFiles(folder, defaults);
    }

    private static void WriteSentenceTransformersFiles(string folder, EmbeddingDefaults d)
    {
        var modules = new JsonArray
        {
            new JsonObject { ["idx"] = 0, ["name"] = "0", ["path"] = "", ["type"] = "sentence_transformers.models.Transformer" },
            new JsonObject { ["idx"] = 1, ["name"] = "1", ["path"] = "1_Pooling", ["type"] = "sentence_transformers.models.Pooling" },
        };
        if (d.Normalize)
            modules.Add(new JsonObject { ["idx"] = 2, ["name"] = "2", ["path"] = "2_Normalize", ["type"] = "sentence_transformers.models.Normalize" });
        var indented = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(folder, "modules.json"), modules.ToJsonString(indented));
        Directory.CreateDirectory(Path.Combine(folder, "1_Pooling"));
        var pooling = new JsonObject
        {
            ["word_embedding_dimension"] = null,
            ["pooling_mode_cls_token"] = d.Pooling == PoolingMode.FirstToken,
            ["pooling_mode_mean_tokens"] = d.Pooling == PoolingMode.Mean,
            ["pooling_mode_max_tokens"] = false,
            ["pooling_mode_mean_sqrt_len_tokens"] = false,
            ["pooling_mode_weightedmean_tokens"] = d.Pooling == PoolingMode.WeightedMean,
            ["pooling_mode_lasttoken"] = d.Pooling == PoolingMode.LastToken,
            ["include_prompt"] = true,
        };
        File.WriteAllText(Path.Combine(folder, "1_Pooling", "config.json"), pooling.ToJsonString(indented));
        if (d.Normalize) Directory.CreateDirectory(Path.Combine(folder, "2_Normalize"));
        File.WriteAllText(Path.Combine(folder, "sentence_bert_config.json"),
            new JsonObject { ["max_seq_length"] = d.MaxLength, ["do_lower_case"] = false }.ToJsonString(indented));
        File.WriteAllText(Path.Combine(folder, "config_sentence_transformers.json"),
            new JsonObject { ["__version__"] = new JsonObject { ["sentence_transformers"] = "3.0.0" }, ["prompts"] = new JsonObject(), ["default_prompt_name"] = null, ["similarity_fn_name"] = "cosine" }.ToJsonString(indented));
        File.WriteAllText(Path.Combine(folder, "ullme.json"),
            new JsonObject { ["pooling"] = Pooler.ToName(d.Pooling), ["attention"] = d.Attention == AttentionMode.Causal ? "causal" : "bidirectional", ["normalize"] = d.Normalize, ["max_length"] = d.MaxLength }.ToJsonString(indented));
    }

    /// <summary>
    /// Embedding defaults of a folder: ullme.json if present, else the sentence-transformers files
    /// (1_Pooling/config.json, sentence_bert_config.json, a Normalize module), else the architecture's defaults
    /// (mean pooling, bidirectional attention, normalised; max length = encoder position limit, or
    /// <see cref="DecoderDefaultMaxLength"/> for decoders).
    /// </summary>
    internal static EmbeddingDefaults ReadDefaults(string folder, ModelConfig config)
    {
        var pooling = PoolingMode.Mean;
        var attention = AttentionMode.Bidirectional;
        bool normalize = true;
        int maxLength = config.IsEncoder
            ? (config.MaxPositionEmbeddings > 0 ? config.MaxPositionEmbeddings : 512)
            : Math.Min(config.MaxPositionEmbeddings > 0 ? config.MaxPositionEmbeddings : DecoderDefaultMaxLength, DecoderDefaultMaxLength);

        var modules = ReadJson(folder, "modules.json") as JsonArray;
        if (modules is not null)
        {
            normalize = modules.Any(m => (m?["type"]?.GetValue<string>() ?? "").EndsWith(".Normalize", StringComparison.Ordinal));
            var poolingModule = modules.FirstOrDefault(m => (m?["type"]?.GetValue<string>() ?? "").EndsWith(".Pooling", StringComparison.Ordinal));
            string poolingPath = poolingModule?["path"]?.GetValue<string>() ?? "1_Pooling";
            if (ReadJson(Path.Combine(folder, poolingPath), "config.json") is JsonObject p)
            {
                if (Flag(p, "pooling_mode_cls_token")) pooling = PoolingMode.FirstToken;
                else if (Flag(p, "pooling_mode_lasttoken")) pooling = PoolingMode.LastToken;
                else if (Flag(p, "pooling_mode_weightedmean_tokens")) pooling = PoolingMode.WeightedMean;
                else if (Flag(p, "pooling_mode_mean_tokens")) pooling = PoolingMode.Mean;
            }
        }
        if (ReadJson(folder, "sentence_bert_config.json") is JsonObject sb && sb["max_seq_length"] is JsonValue msl)
            maxLength = msl.GetValue<int>();
        if (ReadJson(folder, "ullme.json") is JsonObject u)
        {
            if (u["pooling"] is JsonValue pv) pooling = Pooler.Parse(pv.GetValue<string>());
            if (u["attention"] is JsonValue av) attention = ParseAttention(av.GetValue<string>());
            if (u["normalize"] is JsonValue nv) normalize = nv.GetValue<bool>();
            if (u["max_length"] is JsonValue mv) maxLength = mv.GetValue<int>();
        }
        if (config.IsEncoder) attention = AttentionMode.Bidirectional;
        return new EmbeddingDefaults(pooling, attention, normalize, maxLength);

        static bool Flag(JsonObject o, string name) => o[name] is JsonValue v && v.TryGetValue<bool>(out bool b) && b;
    }

    /// <summary>Parses "bidirectional" / "causal".</summary>
    public static AttentionMode ParseAttention(string value) => value.Trim().ToLowerInvariant() switch
    {
        "bidirectional" or "bi" => AttentionMode.Bidirectional,
        "causal" => AttentionMode.Causal,
        _ => throw new UllmeException($"Unknown attention '{value}'. Use bidirectional or causal."),
    };

    private static JsonNode? ReadJson(string folder, string file)
    {
        string path = Path.Combine(folder, file);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    private static string ReadModelId(string folder)
    {
        string name = Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar));
        return string.IsNullOrEmpty(name) ? "model" : name;
    }
}
