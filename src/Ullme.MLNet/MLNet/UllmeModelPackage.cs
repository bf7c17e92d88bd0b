using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;

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
    void AttachTemporaryFolder(TemporaryFolder folder);
}

/// <summary>One entry of a model zip as its central directory declares it; <see cref="Open"/> streams its content.</summary>
internal sealed record PackageEntry(long Length, long CompressedLength, Func<Stream> Open);

/// <summary>The entries of the transformer's folder in a model zip, by path relative to that folder (e.g.
/// <c>Files/config.json</c>); null when absent.</summary>
internal interface IPackageSource
{
    PackageEntry? Find(string relativePath);
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
/// <para>
/// Hostile zips: before anything is written, every listed file must exist in the zip with the length the manifest
/// declares, expand at most <see cref="MaxExpansionRatio"/> times its compressed size (beyond
/// <see cref="RatioCheckedFrom"/> bytes: model weights barely compress, a zip bomb expands ~1000 times), and all of
/// them together must fit the free space of the temporary folder's drive less <see cref="FreeSpaceReserve"/>.
/// Each copy then stops at its declared length (one byte more is an error), so a stream that lies about its size
/// writes at most that. Every failure is one <see cref="UllmeException"/> and removes the temporary folder.
/// </para>
/// </summary>
internal static class UllmeModelPackage
{
    /// <summary>Version of the manifest and file layout. A reader refuses anything newer than it knows.</summary>
    public const int FormatVersion = 1;

    /// <summary>Largest uncompressed/compressed size ratio accepted for a file of at least <see cref="RatioCheckedFrom"/> bytes.</summary>
    public const long MaxExpansionRatio = 100;

    /// <summary>Files smaller than this are not ratio-checked (small JSON compresses well and cannot hurt).</summary>
    public const long RatioCheckedFrom = 1 << 20;

    /// <summary>Free space left untouched on the temporary folder's drive.</summary>
    public const long FreeSpaceReserve = 256L << 20;

    /// <summary>Largest Manifest.json accepted.</summary>
    public const long MaxManifestBytes = 16L << 20;

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
        using var temporary = new TemporaryFolder(prefix: TempPrefix);
        string folder = temporary.Path;
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

    /// <summary>
    /// Re-creates a transformer from a manifest and the zip's entries: checks the manifest and the declared sizes
    /// against the limits above before anything is written, extracts each file into a temporary folder under
    /// <paramref name="tempRoot"/> (capped at its declared length, checked against its SHA-256), and calls
    /// <paramref name="create"/> with the manifest and that folder. On any failure the folder is deleted.
    /// </summary>
    public static T Restore<T>(IHostEnvironment env, PackageKind kind, string manifestJson, IPackageSource source, string? tempRoot,
        Func<IHostEnvironment, Manifest, string, T> create) where T : IPackagedTransformer
    {
        var manifest = ParseManifest(manifestJson, kind);
        string root = string.IsNullOrEmpty(tempRoot) ? Path.GetTempPath() : tempRoot;
        var entries = PlanExtraction(manifest, source, root);
        var temporary = new TemporaryFolder(root, TempPrefix);
        string folder = temporary.Path;
        try
        {
            for (int i = 0; i < manifest.Files.Count; i++)
            {
                var file = manifest.Files[i];
                string dest = IO.PathGuard.ResolveInside(folder, file.Path)
                    ?? throw Corrupted($"lists an invalid file path '{file.Path}'");
                Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
                Extract(entries[i], file, dest);
            }
            var transformer = create(env, manifest, folder);
            // The weights are in memory now: drop them from disk. The small files (tokenizer, config) stay while the
            // transformer lives, because UllmeModel.SaveFolder copies tokenizer files from the model's source folder
            // when the transformer is saved again.
            foreach (string f in Directory.EnumerateFiles(folder, "*.safetensors*", SearchOption.AllDirectories)) File.Delete(f);
            transformer.AttachTemporaryFolder(temporary);
            return transformer;
        }
        catch
        {
            temporary.Dispose();
            throw;
        }
    }

    /// <summary>Reads the manifest entry, refusing one larger than <see cref="MaxManifestBytes"/>; null when absent.</summary>
    internal static string? ReadManifestEntry(IPackageSource source)
    {
        if (source.Find(MLNetInterop.ManifestEntry) is not { } entry) return null;
        if (entry.Length > MaxManifestBytes)
            throw Corrupted($"is {entry.Length} bytes; a manifest is at most {MaxManifestBytes} bytes");
        var bytes = new MemoryStream();
        using (var s = OpenForReading(entry, MLNetInterop.ManifestEntry))
            CopyCapped(s, bytes, entry.Length, MLNetInterop.ManifestEntry, null);
        return System.Text.Encoding.UTF8.GetString(bytes.GetBuffer(), 0, (int)bytes.Length);
    }

    /// <summary>Every check that needs no extraction: entries present with the declared lengths, expansion ratios,
    /// and the total against the free space of <paramref name="tempRoot"/>'s drive.</summary>
    private static PackageEntry[] PlanExtraction(Manifest manifest, IPackageSource source, string tempRoot)
    {
        var entries = new PackageEntry[manifest.Files.Count];
        long total = 0;
        for (int i = 0; i < entries.Length; i++)
        {
            var file = manifest.Files[i];
            var entry = source.Find(MLNetInterop.FilesFolder + "/" + file.Path)
                ?? throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{file.Path}' is missing.");
            if (entry.Length != file.Length)
                throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{file.Path}' is {entry.Length} bytes in the zip, " +
                    $"its {MLNetInterop.ManifestEntry} says {file.Length} bytes (truncated or altered).");
            if (file.Length >= RatioCheckedFrom && file.Length > MaxExpansionRatio * Math.Max(1, entry.CompressedLength))
                throw new UllmeException($"Model zip refused as a zip bomb: the Ullme transformer's file '{file.Path}' declares {file.Length} bytes " +
                    $"from {entry.CompressedLength} compressed bytes (more than {MaxExpansionRatio}x; model files barely compress).");
            total += file.Length;
            entries[i] = entry;
        }
        if (FreeSpace(tempRoot) is long free && total > free - FreeSpaceReserve)
            throw new UllmeException($"Model zip needs {total} bytes of temporary space for the Ullme transformer's files, but '{tempRoot}' has " +
                $"{free} bytes free (keeping {FreeSpaceReserve} in reserve). Free space or set MLContext.TempFilePath to a larger drive.");
        return entries;
    }

    /// <summary>Extracts one entry to <paramref name="dest"/>, never more than its declared length, and checks its SHA-256.</summary>
    private static void Extract(PackageEntry entry, FileEntry file, string dest)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var src = OpenForReading(entry, file.Path))
        using (var dst = new FileStream(dest, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            CopyCapped(src, dst, file.Length, file.Path, hash);
        string sha = Convert.ToHexStringLower(hash.GetHashAndReset());
        if (sha != file.Sha256)
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{file.Path}' has {file.Length} bytes with SHA-256 {sha[..12]}…, " +
                $"expected {file.Length} bytes with SHA-256 {file.Sha256[..Math.Min(12, file.Sha256.Length)]}….");
    }

    private static Stream OpenForReading(PackageEntry entry, string name)
    {
        try
        {
            return entry.Open();
        }
        catch (InvalidDataException e)
        {
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{name}' cannot be read from the zip ({e.Message}).");
        }
    }

    /// <summary>Copies exactly <paramref name="length"/> bytes; a stream that ends early or holds more is refused after
    /// reading at most one byte beyond the length.</summary>
    private static void CopyCapped(Stream src, Stream dst, long length, string name, IncrementalHash? hash)
    {
        byte[] buffer = new byte[1 << 20];
        long remaining = length;
        try
        {
            while (true)
            {
                int n = src.Read(buffer, 0, (int)Math.Min(buffer.Length, remaining + 1));
                if (n == 0) break;
                if (n > remaining)
                    throw new UllmeException($"Model zip refused as a zip bomb: the Ullme transformer's file '{name}' expands beyond the {length} bytes it declares.");
                dst.Write(buffer, 0, n);
                hash?.AppendData(buffer, 0, n);
                remaining -= n;
            }
        }
        catch (InvalidDataException e)
        {
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{name}' cannot be decompressed ({e.Message}).");
        }
        if (remaining > 0)
            throw new UllmeException($"Model zip is corrupted: the Ullme transformer's file '{name}' ends after {length - remaining} of its {length} bytes (truncated).");
    }

    /// <summary>Free bytes on the drive holding <paramref name="path"/>, or null when it cannot be told.</summary>
    private static long? FreeSpace(string path)
    {
        try
        {
            string full = Path.GetFullPath(path);
            var drive = DriveInfo.GetDrives()
                .Where(d => d.IsReady && IO.PathGuard.IsSameOrInside(full, d.RootDirectory.FullName))
                .MaxBy(d => d.RootDirectory.FullName.Length);
            return drive?.AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static UllmeException Corrupted(string what) =>
        new($"Model zip is corrupted: the Ullme transformer's {MLNetInterop.ManifestEntry} {what}.");

    internal static Manifest ParseManifest(string manifestJson, PackageKind kind = PackageKind.Embedding)
    {
        // The version decides how the rest is read, so it is checked first, on the raw JSON.
        JsonElement formatVersion;
        try
        {
            using var doc = JsonDocument.Parse(manifestJson, new JsonDocumentOptions { MaxDepth = 64 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw Corrupted($"is JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}, not an object");
            if (!doc.RootElement.TryGetProperty("format_version", out formatVersion))
                throw Corrupted("has no format_version");
            formatVersion = formatVersion.Clone();
        }
        catch (JsonException e)
        {
            throw Corrupted($"is not valid JSON (line {(e.LineNumber ?? 0) + 1}, byte {(e.BytePositionInLine ?? 0) + 1})");
        }
        if (formatVersion.ValueKind != JsonValueKind.Number || !formatVersion.TryGetInt32(out int version))
            throw Corrupted($"has format_version {Describe(formatVersion)}; it must be a whole number");
        if (version < 1)
            throw Corrupted($"has format_version {version}; versions start at 1");
        if (version > FormatVersion)
        {
            string library = "an unknown version";
            using (var doc = JsonDocument.Parse(manifestJson))
                if (doc.RootElement.TryGetProperty("library", out var lib) && lib.ValueKind == JsonValueKind.String) library = lib.GetString()!;
            throw new UllmeException($"Model zip was written by a newer Ullme.MLNet ({library}, format version {version}); " +
                $"this Ullme.MLNet reads format versions up to {FormatVersion}. Upgrade Ullme.MLNet to load it.");
        }

        Manifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<Manifest>(manifestJson, Json);
        }
        catch (JsonException e)
        {
            throw Corrupted($"has a field of the wrong type or value at {e.Path ?? "$"} (line {(e.LineNumber ?? 0) + 1})");
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or ArgumentException or FormatException)
        {
            throw Corrupted($"cannot be read: {e.Message}");
        }
        if (manifest is null)
            throw Corrupted("is empty");
        bool hasOptions = kind == PackageKind.Embedding ? manifest.Options is not null : manifest.ScoreOptions is not null;
        if (!hasOptions || manifest.Files is null || manifest.Files.Count == 0 || manifest.EmbeddingDimension < 1)
            throw Corrupted("lacks options, files or embedding_dimension");
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var f in manifest.Files)
        {
            if (f is null || string.IsNullOrEmpty(f.Path) || Path.IsPathRooted(f.Path) || f.Path.Contains(':') || f.Path.Any(char.IsControl)
                || f.Path.Split('/', '\\').Any(p => p is ".." or "." or ""))
                throw Corrupted($"lists an invalid file path '{f?.Path}'");
            if (!seen.Add(f.Path))
                throw Corrupted($"lists the file '{f.Path}' twice");
            if (f.Length < 0)
                throw Corrupted($"gives the file '{f.Path}' a negative length ({f.Length})");
            if (f.Sha256 is null || f.Sha256.Length != 64 || !f.Sha256.All(char.IsAsciiHexDigitLower))
                throw Corrupted($"gives the file '{f.Path}' an invalid sha256 (64 lower-case hex digits expected)");
        }
        manifest.Options?.Validate(modelIsLoaded: true);
        manifest.ScoreOptions?.Validate(modelIsLoaded: true);
        return manifest;
    }

    private static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => $"\"{e.GetString()}\" (a string)",
        JsonValueKind.Number => $"{e.GetRawText()}",
        _ => e.ValueKind.ToString().ToLowerInvariant(),
    };

    private static string HashFile(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    /// <summary>Prefix of the temporary folders a save or a load extracts into.</summary>
    private const string TempPrefix = "ullme-mlnet-";
}
