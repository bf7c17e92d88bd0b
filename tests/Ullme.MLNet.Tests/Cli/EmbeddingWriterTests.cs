using Ullme.Cli.Io;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>The embed command's writer never writes what the format cannot hold (issue 14: bare NaN in .jsonl).</summary>
public sealed class EmbeddingWriterTests
{
    [Theory]
    [InlineData(float.NaN, "NaN")]
    [InlineData(float.PositiveInfinity, "Infinity")]
    [InlineData(float.NegativeInfinity, "-Infinity")]
    public void Jsonl_RefusesANonFiniteValue_NamingRowAndDimension(float value, string shown)
    {
        using var stream = new MemoryStream();
        var writer = EmbeddingWriter.Open(stream, "out.jsonl", 2, 3);
        writer.Write([0.5f, 1f, -1f]);
        long written = stream.Length;
        var e = Assert.Throws<UllmeException>(() => writer.Write([0.5f, value, 2f]));
        Assert.Contains("input row 2", e.Message);
        Assert.Contains($"non-finite value {shown} at dimension 1", e.Message);
        Assert.Equal(written, stream.Length); // nothing of the bad row was written
    }

    [Fact]
    public void Jsonl_FiniteRowsAreValidJson_AndNpyKeepsNaN()
    {
        using var jsonl = new MemoryStream();
        EmbeddingWriter.Open(jsonl, "out.jsonl", 1, 2).Write([0.25f, -3f]);
        using var doc = System.Text.Json.JsonDocument.Parse(jsonl.ToArray());
        Assert.Equal(-3f, doc.RootElement.GetProperty("embedding")[1].GetSingle());

        using var npy = new MemoryStream();
        var writer = EmbeddingWriter.Open(npy, "out.npy", 1, 2);
        long header = npy.Length;
        writer.Write([float.NaN, 1f]); // .npy holds IEEE floats, NaN included
        Assert.Equal(header + 8, npy.Length);
    }
}
