using System.Text.Json;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>The manifest inside a saved model zip: versioning and corruption checks (no model needed).</summary>
public sealed class UllmeModelPackageTests
{
    private static string Manifest(int formatVersion = 1, string path = "model.safetensors", int dim = 384) =>
        JsonSerializer.Serialize(new UllmeModelPackage.Manifest
        {
            FormatVersion = formatVersion,
            Library = "Ullme.MLNet 9.9.9",
            ModelId = "m",
            EmbeddingDimension = dim,
            Options = new UllmeEmbeddingOptions(),
            Files = [new UllmeModelPackage.FileEntry { Path = path, Length = 1, Sha256 = new string('0', 64) }],
        }, UllmeModelPackage.Json);

    [Fact]
    public void Current_manifest_round_trips_with_options()
    {
        var m = UllmeModelPackage.ParseManifest(Manifest());
        Assert.Equal(UllmeModelPackage.FormatVersion, m.FormatVersion);
        Assert.Equal("Features", m.Options!.OutputColumnName);
        Assert.Equal("model.safetensors", m.Files.Single().Path);
    }

    [Fact]
    public void Future_format_version_asks_for_a_newer_library()
    {
        var e = Assert.Throws<UllmeException>(() => UllmeModelPackage.ParseManifest(Manifest(formatVersion: UllmeModelPackage.FormatVersion + 1)));
        Assert.Contains("newer Ullme.MLNet", e.Message);
        Assert.Contains($"format version {UllmeModelPackage.FormatVersion + 1}", e.Message);
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("{}")]
    [InlineData("null")]
    public void Damaged_manifest_is_reported_as_a_corrupted_zip(string json)
    {
        var e = Assert.Throws<UllmeException>(() => UllmeModelPackage.ParseManifest(json));
        Assert.Contains("corrupted", e.Message);
    }

    [Theory]
    [InlineData("../escape.bin")]
    [InlineData("/etc/passwd")]
    [InlineData("a//b")]
    public void File_paths_cannot_escape_the_extraction_folder(string path)
    {
        var e = Assert.Throws<UllmeException>(() => UllmeModelPackage.ParseManifest(Manifest(path: path)));
        Assert.Contains("invalid file path", e.Message);
    }
}
