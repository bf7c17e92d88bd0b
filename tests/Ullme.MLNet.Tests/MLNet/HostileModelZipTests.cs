using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// Model zips from strangers: each hostile zip (built here from a real saved one) fails with one UllmeException
/// as the innermost error, and nothing is left in the MLContext's temporary folder (ML.NET's and ours).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class HostileModelZipTests : IDisposable
{
    private readonly string _dir = MLNetTestData.NewTempFolder("ullme-hostile-zip-");
    private readonly string _temp;

    public HostileModelZipTests()
    {
        _temp = Path.Combine(_dir, "tmp");
        Directory.CreateDirectory(_temp);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private MLContext Context() => new() { TempFilePath = _temp };

    private static readonly Lazy<byte[]> Saved = new(() =>
    {
        string dir = MLNetTestData.NewTempFolder("ullme-hostile-base-");
        try
        {
            var ml = new MLContext();
            var data = ml.Data.LoadFromEnumerable(new[] { new TextRow() });
            var model = ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { Model = TinyScoringModel.Folder, BatchSize = 4, Instruction = null }).Fit(data);
            string zip = Path.Combine(dir, "model.zip");
            ml.Model.Save(model, data.Schema, zip);
            return File.ReadAllBytes(zip);
        }
        finally { Directory.Delete(dir, true); }
    });

    private string Prefix()
    {
        using var a = new ZipArchive(new MemoryStream(Saved.Value), ZipArchiveMode.Read);
        string m = a.Entries.Select(e => e.FullName.Replace('\\', '/')).Single(n => n.EndsWith("/" + MLNetInterop.ManifestEntry));
        return m[..^MLNetInterop.ManifestEntry.Length];
    }

    /// <summary>A copy of the saved zip with some entries replaced (null content = removed) and others added.</summary>
    private string Write(string name, Func<string, byte[], byte[]?> change, params (string Name, byte[] Content)[] extra)
    {
        string path = Path.Combine(_dir, name);
        using (var src = new ZipArchive(new MemoryStream(Saved.Value), ZipArchiveMode.Read))
        using (var fs = new FileStream(path, FileMode.Create))
        using (var dst = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            foreach (var e in src.Entries)
            {
                using var ms = new MemoryStream();
                using (var s = e.Open()) s.CopyTo(ms);
                var content = change(e.FullName.Replace('\\', '/'), ms.ToArray());
                if (content is null) continue;
                using var w = dst.CreateEntry(e.FullName, CompressionLevel.Optimal).Open();
                w.Write(content);
            }
            foreach (var (n, c) in extra)
            {
                using var w = dst.CreateEntry(n, CompressionLevel.Optimal).Open();
                w.Write(c);
            }
        }
        return path;
    }

    /// <summary>Rewrites the manifest entry: <paramref name="edit"/> gets the parsed JSON.</summary>
    private Func<string, byte[], byte[]?> Manifest(Action<JsonObject> edit, Func<string, byte[], byte[]?>? other = null) => (n, b) =>
    {
        if (!n.EndsWith("/" + MLNetInterop.ManifestEntry)) return other is null ? b : other(n, b);
        var json = JsonNode.Parse(b)!.AsObject();
        edit(json);
        return Encoding.UTF8.GetBytes(json.ToJsonString());
    };

    private static JsonObject FileOf(JsonObject manifest, string suffix) =>
        manifest["files"]!.AsArray().Select(f => f!.AsObject()).Single(f => f["path"]!.GetValue<string>() is var p && (p == suffix || (suffix.StartsWith('.') && p.EndsWith(suffix))));

    /// <summary>Patches the uncompressed size an entry declares, in its local header and the central directory.</summary>
    private static void PatchDeclaredSize(string zip, string suffix, uint size)
    {
        var b = File.ReadAllBytes(zip);
        for (int i = 0; i + 46 < b.Length; i++)
        {
            if (BitConverter.ToUInt32(b, i) != 0x02014b50) continue;
            int nameLen = BitConverter.ToUInt16(b, i + 28);
            string name = Encoding.UTF8.GetString(b, i + 46, nameLen).Replace('\\', '/');
            if (!name.EndsWith(suffix)) continue;
            BitConverter.GetBytes(size).CopyTo(b, i + 24);
            int local = (int)BitConverter.ToUInt32(b, i + 42);
            BitConverter.GetBytes(size).CopyTo(b, local + 22);
        }
        File.WriteAllBytes(zip, b);
    }

    private UllmeException LoadFails(string zip)
    {
        var e = Assert.ThrowsAny<Exception>(() => Context().Model.Load(zip, out _));
        var inner = Assert.IsType<UllmeException>(e.GetBaseException());
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Empty(Directory.EnumerateFileSystemEntries(_temp));   // ours and ML.NET's temporary folders are gone
        return inner;
    }

    private static string Sha(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    [Fact]
    public void TheUntouchedZipLoadsAndLeavesOnlyTheLoadedModelsSmallFiles()
    {
        var loaded = Context().Model.Load(Write("ok.zip", (_, b) => b), out _);
        Assert.NotNull(loaded);
        // The weights are deleted once loaded; only the tokenizer/config folder stays while the transformer lives.
        Assert.Empty(Directory.EnumerateFiles(_temp, "*.safetensors", SearchOption.AllDirectories));
    }

    [Fact]
    public void AFlippedByteIsCaughtByTheChecksum()
    {
        string zip = Write("flip.zip", (n, b) => { if (n.EndsWith(".safetensors")) b[b.Length / 2] ^= 0x10; return b; });
        var e = LoadFails(zip);
        Assert.Contains("corrupted", e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("SHA-256", e.Message);
    }

    [Fact]
    public void ATruncatedFileAndAMissingEntryAreRefusedBeforeExtraction()
    {
        var e = LoadFails(Write("trunc.zip", (n, b) => n.EndsWith(".safetensors") ? b[..(b.Length / 2)] : b));
        Assert.Contains("model.safetensors' is", e.Message);
        Assert.Contains("truncated or altered", e.Message);

        e = LoadFails(Write("missing.zip", (n, b) => n.EndsWith("Files/config.json") ? null : b));
        Assert.Contains("'config.json' is missing", e.Message);
    }

    [Fact]
    public void AZipCutShortIsRefusedByMLNetBeforeAnyUllmeCode()
    {
        string zip = Write("cut.zip", (_, b) => b);
        var bytes = File.ReadAllBytes(zip);
        File.WriteAllBytes(zip, bytes[..(bytes.Length * 2 / 3)]);
        var e = Assert.ThrowsAny<Exception>(() => Context().Model.Load(zip, out _));
        Assert.Contains("Central Directory", e.GetBaseException().Message);
        GC.Collect();                     // ML.NET's repository removes its empty folder when finalized
        GC.WaitForPendingFinalizers();
        Assert.Empty(Directory.EnumerateFileSystemEntries(_temp));
    }

    [Theory]
    [InlineData("\"1\"", "format_version \"1\" (a string); it must be a whole number")]
    [InlineData("1.5", "format_version 1.5; it must be a whole number")]
    [InlineData("0", "format_version 0; versions start at 1")]
    [InlineData("99", "newer Ullme.MLNet")]
    public void ABadOrFutureFormatVersionIsOneClearError(string value, string expected)
    {
        var e = LoadFails(Write("version.zip", Manifest(m => m["format_version"] = JsonNode.Parse(value))));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void AFieldOfTheWrongTypeNamesTheFieldNotSystemTextJson()
    {
        var e = LoadFails(Write("type.zip", Manifest(m => m["embedding_dimension"] = "big")));
        Assert.Contains("Manifest.json has a field of the wrong type or value at $.embedding_dimension", e.Message);
        Assert.DoesNotContain("System.", e.Message);
    }

    [Fact]
    public void ZipSlipNamesAreRefusedInTheManifestAndIgnoredInTheZip()
    {
        var e = LoadFails(Write("slip.zip", Manifest(m => FileOf(m, "config.json")["path"] = "../../escape.json")));
        Assert.Contains("invalid file path '../../escape.json'", e.Message);

        // An extra entry with a zip-slip name is never extracted: the zip loads and nothing appears outside.
        var loaded = Context().Model.Load(Write("extra.zip", (_, b) => b, ("../../evil.txt", [1, 2, 3]), (Prefix() + "Files/../../evil2.txt", [4])), out _);
        Assert.NotNull(loaded);
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(_dir)!, "evil*.txt", SearchOption.TopDirectoryOnly));
        Assert.Empty(Directory.EnumerateFiles(_dir, "evil*.txt", SearchOption.AllDirectories));
    }

    [Fact]
    public void AZipBombWithHonestSizesIsRefusedBeforeExtraction()
    {
        // 64 MiB of zeros (a real deflate stream, ~64 KB compressed), declared truthfully in zip and manifest.
        var zeros = new byte[64 << 20];
        string zip = Write("bomb.zip", Manifest(m =>
        {
            var f = FileOf(m, ".safetensors");
            f["length"] = zeros.LongLength;
            f["sha256"] = Sha(zeros);
        }, (n, b) => n.EndsWith(".safetensors") ? zeros : b));
        var e = LoadFails(zip);
        Assert.Contains("zip bomb", e.Message);
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void AZipBombDeclaringAHugeSizeForLittleDataIsRefusedBeforeExtraction()
    {
        const uint huge = 3u << 30;
        var zeros = new byte[1 << 20];
        string zip = Write("huge.zip", Manifest(m => FileOf(m, ".safetensors")["length"] = (long)huge, (n, b) => n.EndsWith(".safetensors") ? zeros : b));
        PatchDeclaredSize(zip, ".safetensors", huge);
        var e = LoadFails(zip);
        Assert.Contains("zip bomb", e.Message);
        Assert.Contains($"declares {huge} bytes", e.Message);
    }

    [Fact]
    public void AnEntryWhoseContentExceedsItsDeclaredSizeIsCutAtTheDeclaredSize()
    {
        // 64 MiB of zeros in the zip, but zip and manifest both declare 1,000 bytes.
        var zeros = new byte[64 << 20];
        string zip = Write("liar.zip", Manifest(m =>
        {
            var f = FileOf(m, ".safetensors");
            f["length"] = 1000;
            f["sha256"] = Sha(zeros);
        }, (n, b) => n.EndsWith(".safetensors") ? zeros : b));
        PatchDeclaredSize(zip, ".safetensors", 1000);
        var e = LoadFails(zip);
        // The copy stops at the declared 1,000 bytes (the zip reader and our cap both do), so the hash cannot match.
        Assert.Contains("'model.safetensors' has 1000 bytes with SHA-256", e.Message);
    }
}
