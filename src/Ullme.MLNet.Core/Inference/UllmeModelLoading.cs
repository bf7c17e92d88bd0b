using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using Ullme.MLNet.Hub;
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
    /// model.safetensors.index.json, tokenizer files), a Hugging Face id (<c>org/name</c>, optionally
    /// <c>org/name@revision</c>: read from the Hub cache, downloaded into it when missing, see
    /// <see cref="ModelLoadOptions.Hub"/>), or <see cref="DefaultModelName"/> (or null/empty) for the bundled
    /// all-MiniLM-L6-v2. An existing folder always wins over an id of the same name.
    /// </summary>
    public static UllmeModel Load(string? modelPathOrDefault, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        NativeBackend.Ensure();
        options.Validate();
        if (options.Threads is int threads) UllmeRuntime.SetThreads(threads);
        string folder;
        string modelId;
        if (string.IsNullOrWhiteSpace(modelPathOrDefault) || modelPathOrDefault == DefaultModelName)
        {
            (folder, modelId) = DefaultModelLocator.EnsureFolder();
        }
        else if (ResolveHubId(modelPathOrDefault, options.Hub, options.DownloadProgress, options.CancellationToken) is { } hub)
        {
            (folder, modelId) = hub;
        }
        else
        {
            folder = IO.PathGuard.Normalize(modelPathOrDefault);
            if (File.Exists(folder)) folder = Path.GetDirectoryName(folder)!;
            if (!Directory.Exists(folder))
                throw new UllmeException($"Model folder '{modelPathOrDefault}' does not exist (give a Hugging Face model folder, a Hugging Face id such as Qwen/Qwen2-0.5B, or 'default').");
            modelId = ReadModelId(folder);
        }

        var device = DeviceSelector.Parse(options.Device);
        var dtype = DeviceSelector.ToScalarType(options.DType);
        string onnxFile = Path.Combine(folder, OnnxBackendLocator.ModelFileName);
        bool hasWeights = File.Exists(Path.Combine(folder, CheckpointLoader.SingleFileName)) || File.Exists(Path.Combine(folder, CheckpointLoader.IndexFileName));
        if (options.Backend == InferenceBackend.OnnxRuntime || (File.Exists(onnxFile) && !hasWeights))
            return LoadOnnx(folder, modelId, onnxFile, options);
        // Everything a stranger's folder could get wrong is checked before anything large is allocated: the config
        // (sizes, numbers), the settings files, the weights' headers against the config, and the memory needed.
        var config = ModelConfig.Load(folder);
        var plan = ModelPlan.For(config);
        var defaults = ReadDefaults(folder, config);
        using var checkpoint = CheckpointLoader.Open(folder);
        plan.CheckAgainst(checkpoint.Headers, checkpoint.Description);
        if (device.type == DeviceType.CPU)
        {
            var (available, source) = ModelPlan.AvailableMemory();
            plan.CheckMemory(dtype, checkpoint.LargestTensorBytes, available, source);
        }
        var tokenizer = TokenizerLoader.Load(folder);
        var backbone = BackboneFactory.CreateForLoading(config, dtype, device);
        try
        {
            CheckpointLoader.Load(backbone, checkpoint, dtype, device, new WeightChecks(options.AllowNonFiniteWeights, options.Logger));
            backbone.eval();
        }
        catch
        {
            backbone.Dispose();
            throw;
        }
        return new UllmeModel(config, tokenizer, backbone, defaults, options, modelId, folder, device, dtype);
    }

    /// <summary>
    /// The ONNX Runtime backend: the folder's exported model.onnx, or (a safetensors folder) the model loaded on
    /// TorchSharp in float32, exported in memory with its defaults, and released.
    /// </summary>
    private static UllmeModel LoadOnnx(string folder, string modelId, string onnxFile, ModelLoadOptions options)
    {
        if (options.DType != ModelDType.Float32)
            throw OptionCheck.Error("ModelLoadOptions.DType", $"must be float32 with the OnnxRuntime backend (got {OptionNames.DType.ToName(options.DType)}); an exported graph carries its own precision (export with --quantize int8 or int4 for smaller weights)");
        var factory = OnnxBackendLocator.Get();
        var config = ModelConfig.Load(folder);
        var defaults = ReadDefaults(folder, config);
        var tokenizer = TokenizerLoader.Load(folder);
        var onnxOptions = options with { Backend = InferenceBackend.OnnxRuntime };
        EmbeddingBackbone backbone;
        if (File.Exists(onnxFile))
        {
            backbone = factory.Open(onnxFile, config, defaults, onnxOptions);
        }
        else
        {
            using var torchModel = Load(folder, options with { Backend = InferenceBackend.Torch });
            backbone = factory.Export(torchModel.Backbone, config, defaults, onnxOptions, modelId);
        }
        return new UllmeModel(config, tokenizer, backbone, defaults, onnxOptions, modelId, folder, CPU, ScalarType.Float32);
    }

    /// <summary>
    /// For a Hugging Face id (<c>org/name</c> or <c>org/name@revision</c>) that names no local file or folder: its
    /// snapshot folder in the Hub cache, downloaded first when it is not there, and the id; null for anything else
    /// (a path, "default"). A local folder always wins over an id.
    /// </summary>
    internal static (string Folder, string ModelId)? ResolveHubId(string modelPathOrId, HubOptions? hub, IProgress<ModelDownloadProgress>? progress, CancellationToken cancellationToken = default)
    {
        if (Directory.Exists(modelPathOrId) || File.Exists(modelPathOrId) || !HubModelId.TryParse(modelPathOrId, out var id)) return null;
        return (HubDownloader.Ensure(id, hub ?? HubOptions.FromEnvironment(), progress, cancellationToken), id.RepoId);
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
        if (!Backbone.TryWriteModelFiles(folder))
        using (var scope = NewDisposeScope())
        {
            foreach (var (name, tensor) in Backbone.state_dict())
                tensors.Add(new(name, tensor.detach().cpu().contiguous()));
            SafeTensors.Save(Path.Combine(folder, "model.safetensors"), tensors,
                new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "Ullme.MLNet" });
        }

        CopyTokenizerFiles(folder);
        WriteSentenceTransformersFiles(folder, defaults);
    }

    /// <summary>Copies the tokenizer files of <see cref="SourceFolder"/> into <paramref name="folder"/>.</summary>
    internal void CopyTokenizerFiles(string folder)
    {
        if (IO.PathGuard.Same(folder, SourceFolder)) return;
        foreach (string file in TokenizerFiles)
        {
            string src = Path.Combine(SourceFolder, file);
            if (File.Exists(src)) File.Copy(src, Path.Combine(folder, file), overwrite: true);
        }
    }

    internal static void WriteSentenceTransformersFiles(string folder, EmbeddingDefaults d)
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
            new JsonObject { ["pooling"] = Pooler.ToName(d.Pooling), ["attention"] = OptionNames.Attention.ToName(d.Attention), ["normalize"] = d.Normalize, ["max_length"] = d.MaxLength }.ToJsonString(indented));
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

        string modulesFile = Path.Combine(folder, "modules.json");
        var modules = ReadJson(folder, "modules.json");
        if (modules is not null)
        {
            if (modules is not JsonArray list)
                throw new UllmeException($"'{modulesFile}' must hold a JSON array of modules, not {Kind(modules)}.");
            var types = new List<(string Type, JsonObject Module)>();
            for (int i = 0; i < list.Count; i++)
            {
                if (list[i] is not JsonObject module)
                    throw new UllmeException($"'{modulesFile}': entry {i} must be a JSON object, not {Kind(list[i])}.");
                types.Add((Str(module, "type", modulesFile, $"[{i}].type") ?? "", module));
            }
            normalize = types.Any(m => m.Type.EndsWith(".Normalize", StringComparison.Ordinal));
            var poolingModule = types.FirstOrDefault(m => m.Type.EndsWith(".Pooling", StringComparison.Ordinal));
            string poolingPath = (poolingModule.Module is null ? null : Str(poolingModule.Module, "path", modulesFile, $"[{types.IndexOf(poolingModule)}].path")) ?? "1_Pooling";
            if (IO.PathGuard.ResolveInside(folder, Path.Combine(poolingPath, "config.json")) is null)
                throw new UllmeException($"'{modulesFile}': the pooling module's \"path\" '{poolingPath}' lies outside the model folder.");
            string poolingFile = Path.Combine(folder, poolingPath, "config.json");
            switch (ReadJson(Path.Combine(folder, poolingPath), "config.json"))
            {
                case null: break;
                case JsonObject p:
                    if (Flag(p, "pooling_mode_cls_token", poolingFile)) pooling = PoolingMode.FirstToken;
                    else if (Flag(p, "pooling_mode_lasttoken", poolingFile)) pooling = PoolingMode.LastToken;
                    else if (Flag(p, "pooling_mode_weightedmean_tokens", poolingFile)) pooling = PoolingMode.WeightedMean;
                    else if (Flag(p, "pooling_mode_mean_tokens", poolingFile)) pooling = PoolingMode.Mean;
                    break;
                case var other:
                    throw new UllmeException($"'{poolingFile}' must hold a JSON object, not {Kind(other)}.");
            }
        }
        string sbFile = Path.Combine(folder, "sentence_bert_config.json");
        switch (ReadJson(folder, "sentence_bert_config.json"))
        {
            case null: break;
            case JsonObject sb:
                if (Int(sb, "max_seq_length", sbFile) is int msl) maxLength = msl;
                break;
            case var other:
                throw new UllmeException($"'{sbFile}' must hold a JSON object, not {Kind(other)}.");
        }
        string uFile = Path.Combine(folder, "ullme.json");
        switch (ReadJson(folder, "ullme.json"))
        {
            case null: break;
            case JsonObject u:
                try
                {
                    if (Str(u, "pooling", uFile) is string pv) pooling = FromFile(OptionNames.Pooling, pv, uFile, "pooling");
                    if (Str(u, "attention", uFile) is string av) attention = FromFile(OptionNames.Attention, av, uFile, "attention");
                }
                catch (UllmeException e) when (!e.Message.StartsWith($"'{uFile}'", StringComparison.Ordinal))
                {
                    throw new UllmeException($"'{uFile}': {e.Message}", e);
                }
                if (u["normalize"] is not null) normalize = Flag(u, "normalize", uFile);
                if (Int(u, "max_length", uFile) is int ml) maxLength = ml;
                break;
            case var other:
                throw new UllmeException($"'{uFile}' must hold a JSON object, not {Kind(other)}.");
        }
        if (config.IsEncoder) attention = AttentionMode.Bidirectional;
        return new EmbeddingDefaults(pooling, attention, normalize, maxLength);
    }

    private static string Kind(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "an object",
        JsonArray => "an array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => $"the string {Shown(v)}",
            JsonValueKind.Number => $"the number {Shown(v)}",
            JsonValueKind.True or JsonValueKind.False => $"{Shown(v)}",
            _ => Shown(v),
        },
        _ => Shown(node),
    };

    private static string Shown(JsonNode node)
    {
        string text = node.ToJsonString();
        return text.Length > 60 ? text[..60] + "…" : text;
    }

    /// <summary>A string field, or null when absent / null; anything else is an error naming file and field.</summary>
    private static string? Str(JsonObject o, string name, string file, string? shownName = null)
    {
        var node = o[name];
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        throw new UllmeException($"'{file}': \"{shownName ?? name}\" must be a string, not {Kind(node)}.");
    }

    /// <summary>A true/false field (absent or null = false); anything else is an error naming file and field.</summary>
    private static bool Flag(JsonObject o, string name, string file)
    {
        var node = o[name];
        if (node is null) return false;
        if (node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False) return v.GetValue<bool>();
        throw new UllmeException($"'{file}': \"{name}\" must be true or false, not {Kind(node)}.");
    }

    /// <summary>A positive 32-bit length (absent or null = null); anything else is an error naming file and field.</summary>
    private static int? Int(JsonObject o, string name, string file)
    {
        var node = o[name];
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out int i))
        {
            if (i < 1) throw new UllmeException($"'{file}': \"{name}\" must be a positive number of tokens, not {i}.");
            return i;
        }
        if (node is JsonValue d && d.GetValueKind() == JsonValueKind.Number && d.TryGetValue<double>(out double x) && x == Math.Floor(x) && x >= 1)
            throw new UllmeException($"'{file}': \"{name}\" is {Shown(node)}, more tokens than a 32-bit count holds.");
        throw new UllmeException($"'{file}': \"{name}\" must be a positive whole number of tokens, not {Kind(node)}.");
    }

    /// <summary>Parses "bidirectional" / "causal".</summary>
    /// <summary>An enum value named in a model folder's settings file.</summary>
    private static T FromFile<T>(EnumNames<T> names, string value, string file, string field) where T : struct, Enum =>
        names.TryParse(value, out T parsed) ? parsed
            : throw new UllmeException($"'{file}': \"{field}\": Unknown {names.What} '{value}'. Use {names.Choices}.");

    public static AttentionMode ParseAttention(string value) => OptionNames.Attention.Parse(value, "EmbeddingOptions.Attention");

    private static JsonNode? ReadJson(string folder, string file)
    {
        string path = Path.Combine(folder, file);
        if (!IO.ModelFileGuard.Exists(path, IO.ModelFileGuard.ConfigFileMaxBytes)) return null;
        byte[] bytes = IO.ModelFileGuard.ReadAllBytes(path, IO.ModelFileGuard.ConfigFileMaxBytes);
        try
        {
            return JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = IO.ModelFileGuard.ConfigMaxDepth, AllowTrailingCommas = true })
                ?? throw new UllmeException($"'{path}' holds JSON null, not settings.");
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
