using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Ullme.Cli;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>The `ullme` commands as a user runs them: files in, files out, one-line errors, no partial output.</summary>
[Collection(TorchCollection.Name)]
public sealed class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>Runs the CLI in-process, capturing stderr.</summary>
    internal static (int Code, string Err) Run(params string[] args)
    {
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            return (UllmeCli.Run(args), err.ToString());
        }
        finally
        {
            Console.SetError(saved);
        }
    }

    internal static float[,] ReadNpy(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(0x93, bytes[0]);
        Assert.Equal("NUMPY", Encoding.ASCII.GetString(bytes, 1, 5));
        int headerLen = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
        Assert.Equal(0, (10 + headerLen) % 64);
        string header = Encoding.ASCII.GetString(bytes, 10, headerLen);
        Assert.Contains("'descr': '<f4'", header);
        var shape = header[(header.IndexOf("'shape': (", StringComparison.Ordinal) + 10)..];
        shape = shape[..shape.IndexOf(')')];
        var dims = shape.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        var m = new float[dims[0], dims[1]];
        int o = 10 + headerLen;
        Assert.Equal(o + dims[0] * dims[1] * 4, bytes.Length);
        for (int i = 0; i < dims[0]; i++)
            for (int j = 0; j < dims[1]; j++, o += 4)
                m[i, j] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(o));
        return m;
    }

    [AssetFact]
    public void EmbedTxtToNpyMatchesTheEngineInInputOrder()
    {
        var texts = new[] { "The cat sat on the mat.", "", "Lily and Ben went to the park to play with a big red ball.", "Hello!" };
        File.WriteAllText(PathOf("in.txt"), string.Join("\r\n", texts) + "\r\n");
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("in.txt"), "--output", PathOf("out.npy"), "--pooling", "weighted-mean", "--attention", "causal", "--batch-size", "3");
        Assert.True(code == 0, err);
        var npy = ReadNpy(PathOf("out.npy"));
        using var model = UllmeModel.Load(Assets.Stories260K);
        var expected = new EmbeddingEngine(model).Embed(texts, new EmbeddingOptions { Pooling = MLNet.Pooling.PoolingMode.WeightedMean, Attention = MLNet.Modeling.AttentionMode.Causal });
        Assert.Equal(texts.Length, npy.GetLength(0));
        for (int i = 0; i < texts.Length; i++)
            for (int j = 0; j < npy.GetLength(1); j++)
                Assert.Equal(expected[i][j], npy[i, j], 5);
    }

    [AssetFact]
    public void EmbedJsonlAcceptsTextAndPreTokenizedIdsUsedAsGiven()
    {
        File.WriteAllLines(PathOf("in.jsonl"), ["{\"text\": \"Hello!\"}", "{\"input_ids\": [1, 346, 306, 414, 443]}", "", "{\"text\": \"A dog.\"}"]);
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("in.jsonl"), "--output", PathOf("out.jsonl"));
        Assert.True(code == 0, err);
        var rows = File.ReadAllLines(PathOf("out.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();
        Assert.Equal(3, rows.Length);
        // "Hello!" tokenizes to [1, 346, 306, 414, 443] (golden hidden.json), so rows 0 and 1 are the same input.
        for (int j = 0; j < rows[0].Length; j++) Assert.Equal(rows[0][j], rows[1][j], 5);
        Assert.Equal(64, rows[2].Length);
    }

    [AssetFact]
    public void EmbedCsvUsesTheNamedColumnWithQuotes()
    {
        File.WriteAllText(PathOf("in.csv"), "id,sentence\n1,\"Hello, world!\"\n2,\"She said \"\"hi\"\".\"\n");
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("in.csv"), "--output", PathOf("out.npy"), "--text-column", "sentence");
        Assert.True(code == 0, err);
        Assert.Equal(2, ReadNpy(PathOf("out.npy")).GetLength(0));
        var (bad, badErr) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("in.csv"), "--output", PathOf("out2.npy"), "--text-column", "text");
        Assert.Equal(1, bad);
        Assert.Contains("no column 'text'", badErr);
        Assert.False(File.Exists(PathOf("out2.npy")));
    }

    [AssetFact]
    public void EmptyInputGivesEmptyOutputAndExitZero()
    {
        File.WriteAllText(PathOf("empty.txt"), "");
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("empty.txt"), "--output", PathOf("out.npy"));
        Assert.True(code == 0, err);
        Assert.Equal(0, ReadNpy(PathOf("out.npy")).GetLength(0));
    }

    [AssetFact]
    public void BadInputLineIsOneErrorLineWithItsNumberAndNoOutputFile()
    {
        File.WriteAllLines(PathOf("bad.jsonl"), ["{\"text\": \"ok\"}", "{\"text\": \"ok\"}", "{not json"]);
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("bad.jsonl"), "--output", PathOf("out.npy"));
        Assert.Equal(1, code);
        Assert.Contains("bad.jsonl:3", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(File.Exists(PathOf("out.npy")));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [AssetFact]
    public void OutOfVocabularyIdsAreRejectedWithTheLine()
    {
        File.WriteAllLines(PathOf("ids.jsonl"), ["{\"input_ids\": [1, 2]}", "{\"input_ids\": [1, 99999]}"]);
        var (code, err) = Run("embed", "--model", Assets.Stories260K, "--input", PathOf("ids.jsonl"), "--output", PathOf("out.npy"));
        Assert.Equal(1, code);
        Assert.Contains("line 2", err);
        Assert.Contains("99999", err);
    }

    [AssetFact]
    public void ScoreWritesLogProbsSumAndMean()
    {
        File.WriteAllLines(PathOf("s.jsonl"), [
            "{\"prefix\": \"\", \"continuation\": \"Once upon a time there was a little girl\"}",
            "{\"input_ids\": [1, 403, 407, 261, 378, 383, 286, 261, 376, 298, 315, 421], \"score_from\": 1}",
        ]);
        var (code, err) = Run("score", "--model", Assets.Stories260K, "--input", PathOf("s.jsonl"), "--output", PathOf("s.out.jsonl"));
        Assert.True(code == 0, err);
        var lines = File.ReadAllLines(PathOf("s.out.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, lines.Length);
        foreach (var l in lines)
        {
            Assert.Equal(11, l.GetProperty("token_logprobs").GetArrayLength());
            Assert.Equal(-0.474387, l.GetProperty("mean").GetDouble(), 4);
            Assert.Equal(-0.474387 * 11, l.GetProperty("sum").GetDouble(), 3);
        }
    }

    [AssetFact]
    public void TokenizeWritesIdsWithSpecialTokens()
    {
        File.WriteAllText(PathOf("t.txt"), "Hello!\n");
        var (code, err) = Run("tokenize", "--model", Assets.Stories260K, "--input", PathOf("t.txt"), "--output", PathOf("t.jsonl"));
        Assert.True(code == 0, err);
        Assert.Equal("{\"input_ids\":[1,346,306,414,443]}", File.ReadAllText(PathOf("t.jsonl")).Trim());
    }

    [Fact]
    public void UnknownModelTypeIsOneClearLine()
    {
        Directory.CreateDirectory(PathOf("m"));
        File.WriteAllText(PathOf("m/config.json"), "{\"model_type\": \"gpt_neox\", \"vocab_size\": 10}");
        File.WriteAllText(PathOf("in.txt"), "x\n");
        var (code, err) = Run("embed", "--model", PathOf("m"), "--input", PathOf("in.txt"), "--output", PathOf("o.npy"));
        Assert.Equal(1, code);
        Assert.Contains("gpt_neox", err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void BadOutputExtensionIsRejectedBeforeAnyWork()
    {
        var (code, err) = Run("embed", "--input", PathOf("missing.txt"), "--output", PathOf("o.parquet"));
        Assert.Equal(1, code);
        Assert.Contains(".parquet", err);
    }

    [Fact]
    public void EveryCommandHasHelp()
    {
        foreach (var command in UllmeCli.CreateRoot().Subcommands)
        {
            var output = new StringWriter();
            var saved = Console.Out;
            Console.SetOut(output);
            try
            {
                Assert.Equal(0, UllmeCli.Run([command.Name, "--help"]));
            }
            finally
            {
                Console.SetOut(saved);
            }
            Assert.Contains("--", output.ToString());
        }
    }

    [Fact]
    public void ErrorsFromARealProcessAreOneLineWithNonZeroExit()
    {
        string dll = typeof(UllmeCli).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet", [dll, "embed", "--model", PathOf("nowhere"), "--input", PathOf("x.txt"), "--output", PathOf("o.npy")])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        File.WriteAllText(PathOf("x.txt"), "hi\n");
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(1, p.ExitCode);
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Trim().Split('\n'));
    }
}
