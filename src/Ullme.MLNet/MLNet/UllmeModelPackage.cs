using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>Which Ullme transformer a model zip entry holds (each has its own ML.NET signature and loader).</summary>
internal enum PackageKind
{
    Embedding,
    Score,
}

/// <summary>An Ullme transformer that <see cref="UllmeModelPackage"/> saves and restores.</summary>
internal interface IPackagedTransformer
{
    PackageKind Kind { get; }

    UllmeModel Model { get; }

    string ModelId { get; }

    /// <summary>Fills the transformer-specific members of the manifest (options, dimension).</summary>
    void Describe(UllmeModelPackage.Manifest manifest);

    /// <summary>Takes ownership of the folder a zip was extracted to (tokenizer and config files; the weights are
    /// already deleted): removed when the transformer is collected, or at process exit.</summary>
    void AttachTemporaryFolder(string folder);
}

/// <summary>
/// What an Ullme transformer (<see cref="UllmeEmbeddingTransformer"/>, <see cref="UllmeScoreTransformer"/>) writes into
/// an ML.NET model zip, and how it is read back.
///
/// Layout of the transformer's folder in the zip (e.g. <c>TransformerChain/Transform_000/</c>):
/// <code>
///   Model.key        ML.NET header (signature ULLMEEMB or ULLMESCR, versions, loader name and assembly) + manifest copy
///   Manifest.json    { format_version, library, model_id, embedding_dimension, options | score_options,
///                      files: [{path, length, sha256}] }
///   Files/...        the self-contained Hugging Face folder written by UllmeModel.SaveFolder: config.json,
///                    model.safetensors, tokenizer files, pooling settings
/// </code>
/// Loading extracts the files into a temporary folder (checking length and SHA-256 of each, so a damaged zip fails
/// with the file's name), loads the model from there and deletes the folder: the original model folder is never needed.
/// </summary>
internal static class UllmeModelPackage
{
    /// <summary>Version of the manifest and file layout. A reader refuses anything newer than it knows.</summary>
    public const int FormatVersion = 1;

    internal sealed class Manifest
    {
        [JsonPropertyName("format_version")] public int FormatVersion { get; set; }
        [JsonPropertyName("library")] public string Library { get; set; } = "";
        [JsonPropertyName("model_id")] public string ModelId { get; set; } = "";
        [JsonPropertyName("embedding_dimension")] public int EmbeddingDimension { get; set; }
        [JsonPropertyName("options")] public UllmeEmbeddingOptions? Options { get; set; }
        [JsonPropertyName("score_options")] public UllmeScoreOptions? ScoreOptions { get; set; }
        [JsonPropertyName("files")] public List<FileEntry> Files { get; set; } = [];
    }

    internal sealed class FileEntry
    {
        [JsonPropertyName("path")] public string Path { get; set; } = "";
        [JsonPropertyName("length")] public long Length { get; set; }
        [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Writes <paramref name="transformer"/>'s model and settings into the save context.</summary>
    public static void Save(ModelSaveContext ctx, IPackagedTransformer transformer)
    {
        string folder = CreateTempFolder();
        try
        {
            transformer.Model.SaveFolder(folder);
            var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
                .Select(f => (Rel: Path.GetRelativePath(folder, f).Replace('\\', '/'), Full: f))
                .OrderBy(f => f.Rel, StringComparer.Ordinal)
                .ToList();
            var manifest = new Manifest
            {
                FormatVersion = FormatVersion,
                Library = "Ullme.MLNet " + typeof(UllmeModelPackage).Assembly.GetName().Version,
                ModelId = transformer.ModelId,
                EmbeddingDimension = transformer.Model.EmbeddingDimension,
                Files = files.Select(f => new FileEntry { Path = f.Rel, Length = new FileInfo(f.Full).Length, Sha256 = HashFile(f.Full) }).ToList(),
            };
            transformer.Describe(manifest);
            MLNetInterop.Save(ctx, transformer.Kind, JsonSerializer.Serialize(manifest, Json), files);
        }
        finally
        {
            TryDeleteFolder(folder);
        }
    }

    /// <summary>
    /// Re-creates a transformer from a manifest and a reader of its files (<paramref name="tryReadFile"/> feeds the
    /// stream of a relative path to the callback and returns false when the zip lacks it); <paramref name="create"/>
    /// builds the transformer from the manifest and the extracted folder.
    /// </summary>
    public static T Restore<T>(IHostEnvironment env, PackageKind kind, string manifestJson, Func<string, Action<Stream>, bool> tryReadFile,
        Func<IHostEnvironment, Manifest, string, T> create) where T : IPackagedTransformer
    {
        var manifest = ParseManifest(manifestJson, kind);
        string folder = CreateTempFolder();
        try
        {
            foreach (var file in manifest.Files)
            {
                string dest = Path.GetFullPath(Path.Combine(folder, file.Path));
                Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
                long length = 0;
                string sha = "";
                bool found = tryReadFile(file.Path, src =>
                {
                    using var dst = File.Create(dest);
                    using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                    byte[] buffer = new byte[1 << 20];
                    int n;
                    while ((n = src.Read(buffer, 0, buffer.Length)) > 0)
                    {
                        dst.Write(buffer, 0, n);
                        hash.AppendData(buffer, 0, n);
                        length += n;
                    }
                    sha = Convert.ToHexStringLower(hash.GetHashAndReset());
                });
                if (!found)
                    throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{file.Path}' is missing.");
                if (length != file.Length || sha != file.Sha256)
                    throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{file.Path}' has {length} bytes with SHA-256 {sha[..Math.Min(12, sha.Length)]}…, " +
                        $"expected {file.Length} bytes with SHA-256 {file.Sha256[..Math.Min(12, file.Sha256.Length)]}….");
            }
            var transformer = create(env, manifest, folder);
            // The weights are in memory now: drop them from disk. The small files (tokenizer, config) stay while the
            // transformer lives, because UllmeModel.SaveFolder copies tokenizer files from the model's source folder
            // when the transformer is saved again.
            foreach (string f in Directory.EnumerateFiles(folder, "*.safetensors*", SearchOption.AllDirectories)) File.Delete(f);
            transformer.AttachTemporaryFolder(folder);
            folder = "";
            return transformer;
        }
        finally
        {
            if (folder.Length > 0) TryDeleteFolder(folder);
        }
    }

    internal static Manifest ParseManifest(string manifestJson, PackageKind kind = PackageKind.Embedding)
    {
        Manifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<Manifest>(manifestJson, Json);
        }
        catch (JsonException e)
        {
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's {MLNetInterop.ManifestEntry} is not valid JSON ({e.Message}).", e);
        }
        if (manifest is null || manifest.FormatVersion < 1)
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's {MLNetInterop.ManifestEntry} has no valid format_version.");
        if (manifest.FormatVersion > FormatVersion)
            throw new UllmeException($"Model zip was written by a newer Ullme.MLNet ({manifest.Library}, format version {manifest.FormatVersion}); " +
                $"this Ullme.MLNet reads format versions up to {FormatVersion}. Upgrade Ullme.MLNet to load it.");
        bool hasOptions = kind == PackageKind.Embedding ? manifest.Options is not null : manifest.ScoreOptions is not null;
        if (!hasOptions || manifest.Files.Count == 0 || manifest.EmbeddingDimension < 1)
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's {MLNetInterop.ManifestEntry} lacks options, files or embedding_dimension.");
        foreach (var f in manifest.Files)
        {
            if (string.IsNullOrEmpty(f.Path) || Path.IsPathRooted(f.Path) || f.Path.Split('/', '\\').Any(p => p is ".." or "." or ""))
                throw new UllmeException($"Model zip is corrupted: the Ullme transformer's {MLNetInterop.ManifestEntry} lists an invalid file path '{f.Path}'.");
        }
        manifest.Options?.Validate(modelIsLoaded: true);
        manifest.ScoreOptions?.Validate(modelIsLoaded: true);
        return manifest;
    }

    private static string HashFile(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    private static string CreateTempFolder()
    {
        string folder = Path.Combine(Path.GetTempPath(), "ullme-mlnet-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return folder;
    }

    internal static void TryDeleteFolder(string folder)
    {
        try { if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); }
        catch (IOException) { /* a file still open (e.g. memory-mapped on Windows): the OS temp cleaner takes it */ }
        catch (UnauthorizedAccessException) { }
    }
}
