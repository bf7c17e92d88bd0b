using System.Diagnostics;
using System.Text;
using Ullme.Cli;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>
/// Resource limits and input hygiene of the CLI (docs/reliability.md, "Resource limits"): flags beyond what the
/// machine or the model allows are one error naming the flag; long lines, invalid UTF-8 and NUL bytes are handled as
/// documented; an output naming the input is refused; piped output is not wrapped; progress moves per batch.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class CliLimitsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-limits-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static (int Code, string Err) Run(params string[] args) => CliTests.Run(args);

    private string TwoLines()
    {
        string input = PathOf("in.txt");
        File.WriteAllText(input, "a first text\na second text\n");
        return input;
    }

    [Theory]
    [InlineData("2147483648", "--batch-size must be at most 2147483647 (got 2147483648).")]
    [InlineData("1e9", "--batch-size must be a whole number (got '1e9').")]
    [InlineData("1000000000", "--batch-size must be between 1 and 65536 (got 1000000000).")]
    public void AnAbsurdBatchSizeIsOneErrorUnderTheFlag(string value, string expected)
    {
        string output = PathOf("out.npy");
        var (code, err) = Run("embed", "--input", TwoLines(), "--output", output, "--batch-size", value);
        Assert.Equal(1, code);
        Assert.Contains(expected, err);
        Assert.DoesNotContain("sort window", err);
        Assert.False(File.Exists(output));
    }

    [Theory]
    [InlineData("0", "--max-length must be at least 2 tokens (got 0).")]
    [InlineData("-5", "--max-length must be at least 2 tokens (got -5).")]
    [InlineData("513", "--max-length must be at most 512, the max_position_embeddings of model 'sentence-transformers/all-MiniLM-L6-v2' (got 513).")]
    public void MaxLengthOutsideTheModelsPositionsIsRefused(string value, string expected)
    {
        string output = PathOf("out.npy");
        var (code, err) = Run("embed", "--input", TwoLines(), "--output", output, "--max-length", value);
        Assert.Equal(1, code);
        Assert.Equal("error: " + expected, err.Trim());
        Assert.False(File.Exists(output));
    }

    [AssetFact]
    public void MaxLengthBeyondADecodersPositionsIsRefusedToo()
    {
        var (code, err) = Run("embed", "-m", Assets.Stories260K, "--input", TwoLines(), "--output", PathOf("out.npy"), "--max-length", "100000");
        Assert.Equal(1, code);
        Assert.Contains("--max-length must be at most 512, the max_position_embeddings", err);
    }

    [Fact]
    public void ThreadsAboveTheMachinesCoresAreRefused()
    {
        int tooMany = Environment.ProcessorCount + 1;
        var (code, err) = Run("embed", "--input", TwoLines(), "--output", PathOf("out.npy"), "--threads", tooMany.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(1, code);
        Assert.Equal($"error: --threads must be between 1 and {Environment.ProcessorCount} (this machine's cores) (got {tooMany}).", err.Trim());
        var (code2, err2) = Run("tokenize", "--input", TwoLines(), "--output", PathOf("t.jsonl"));
        Assert.True(code2 == 0, err2);
    }

    [Theory]
    [InlineData("same")]
    [InlineData("relative")]
    [InlineData("symlink")]
    [InlineData("dir-symlink")]
    public void AnOutputNamingTheInputIsRefusedBeforeAnythingIsWritten(string how)
    {
        string input = PathOf("q.jsonl");
        string content = "{\"text\": \"a question\"}\n{\"text\": \"another\"}\n";
        File.WriteAllText(input, content);
        string inputArg = input, outputArg = input;
        switch (how)
        {
            case "relative":
                outputArg = Path.GetRelativePath(Environment.CurrentDirectory, Path.Combine(_dir, ".", "sub", "..", "q.jsonl"));
                break;
            case "symlink":
                File.CreateSymbolicLink(PathOf("link.jsonl"), input);
                inputArg = PathOf("link.jsonl");
                break;
            case "dir-symlink":
                Directory.CreateSymbolicLink(PathOf("linked-dir"), _dir);
                outputArg = Path.Combine(_dir, "linked-dir", "q.jsonl");
                break;
        }
        foreach (string command in new[] { "embed", "tokenize" })
        {
            var (code, err) = Run(command, "--input", inputArg, "--output", outputArg);
            Assert.Equal(1, code);
            Assert.Contains($"--output '{outputArg}' is the --input file '{inputArg}'", err);
            Assert.Equal(content, File.ReadAllText(input));
        }
        Assert.DoesNotContain(Directory.GetFiles(_dir), f => Path.GetFileName(f).EndsWith(".tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void AnOutOfVocabularyIdNamesTheFileTheLineAndTheId()
    {
        string input = PathOf("ids.jsonl");
        File.WriteAllText(input, "{\"input_ids\": [101, 7592, 102]}\n{\"input_ids\": [101, 999999, 102]}\n");
        var (code, err) = Run("embed", "--input", input, "--output", PathOf("out.npy"));
        Assert.Equal(1, code);
        Assert.Contains($"{input}, line 2: token id 999999 at position 1 is outside the vocabulary [0, 30522)", err);
    }

    [Fact]
    public void ScoreRequiresAModelAndRefusesTheEncoderDefault()
    {
        string input = PathOf("s.jsonl");
        File.WriteAllText(input, "{\"prefix\": \"a\", \"continuation\": \"b\"}\n");
        var (code, err) = Run("score", "--input", input, "--output", PathOf("out.jsonl"));
        Assert.NotEqual(0, code);
        Assert.Contains("--model", err);
        Assert.Contains("required", err);
        (code, err) = Run("score", "--model", "default", "--input", input, "--output", PathOf("out.jsonl"));
        Assert.Equal(1, code);
        Assert.Contains("an encoder without a language-model head: score needs a decoder model folder", err);
        Assert.False(File.Exists(PathOf("out.jsonl")));
    }

    [Fact]
    public void InvalidUtf8IsReplacedByTheReplacementCharacterAndCounted()
    {
        string input = PathOf("bad.txt");
        var bytes = new List<byte>();
        bytes.AddRange("fine text\n"u8.ToArray());
        bytes.AddRange([0x62, 0x61, 0xFF, 0x64, 0x20, 0xC3, 0x28, 0x0A]);   // "ba", invalid 0xFF, "d ", truncated sequence C3 then "("
        File.WriteAllBytes(input, bytes.ToArray());
        string output = PathOf("out.jsonl");
        var (code, err) = Run("embed", "--input", input, "--output", output);
        Assert.True(code == 0, err);
        Assert.Contains($"'{input}': 2 invalid UTF-8 byte sequences replaced by U+FFFD", err);

        using var model = UllmeModel.Load("default");
        var expected = new EmbeddingEngine(model).Embed(["fine text", "ba\uFFFDd \uFFFD("]);
        var rows = File.ReadAllLines(output).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray()).ToArray();
        Assert.Equal(2, rows.Length);
        for (int i = 0; i < 2; i++) Assert.Equal(expected[i], rows[i]);

        File.WriteAllText(PathOf("good.txt"), "fine text\n");
        (code, err) = Run("embed", "--input", PathOf("good.txt"), "--output", PathOf("good.jsonl"));
        Assert.True(code == 0, err);
        Assert.DoesNotContain("UTF-8", err);
    }

    [Fact]
    public void NulBytesAreKeptAsCharacters()
    {
        string input = PathOf("nul.txt");
        File.WriteAllText(input, "a\0b\nplain\n");
        string output = PathOf("out.jsonl");
        var (code, err) = Run("tokenize", "--input", input, "--output", output);
        Assert.True(code == 0, err);
        var tokenizer = TokenizerLoader.Load(DefaultModel.EnsureFolder());
        string expected = "{\"input_ids\":[" + string.Join(',', tokenizer.Encode("a\0b")) + "]}";
        Assert.Equal(expected, File.ReadAllLines(output)[0]);
        Assert.Equal(2, File.ReadAllLines(output).Length);
    }

    [Fact]
    public void ATenMegabyteLineIsTruncatedToMaxLengthWithAWarning()
    {
        string input = PathOf("long.txt");
        var line = new StringBuilder(10_000_010);
        while (line.Length < 10_000_000) line.Append("word ");
        File.WriteAllText(input, line + "\nshort text\n");
        string output = PathOf("out.jsonl");
        var (code, err) = Run("embed", "--input", input, "--output", output, "--max-length", "16");
        Assert.True(code == 0, err);
        Assert.Contains("1 of 2 texts exceeded 16 tokens and were truncated", err);
        using var model = UllmeModel.Load("default");
        var expected = new EmbeddingEngine(model).Embed([string.Concat(Enumerable.Repeat("word ", 14)), "short text"]);
        var first = System.Text.Json.JsonDocument.Parse(File.ReadLines(output).First()).RootElement.GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(expected[0], first);
    }

    [Fact]
    public void OnlyABoundedPrefixOfALongTextIsTokenized()
    {
        var inner = TokenizerLoader.Load(DefaultModel.EnsureFolder());
        var counting = new CountingTokenizer(inner);
        string text = string.Concat(Enumerable.Repeat("word ", 2_000_000));
        var encoded = TextEncoding.Encode(counting, text, null, 16);
        Assert.True(encoded.Truncated);
        Assert.Equal(16, encoded.Length);
        Assert.Equal(16 * TextEncoding.MaxCharsPerToken, counting.LongestInput);
        Assert.Equal(TextEncoding.Encode(inner, text[..(16 * 64)], null, 16).Ids, encoded.Ids);
        var shortText = TextEncoding.Encode(counting, "a short text", null, 16);
        Assert.False(shortText.Truncated);
    }

    [Fact]
    public void TheEmbedProgressMovesEveryBatch()
    {
        string input = PathOf("many.txt");
        File.WriteAllLines(input, Enumerable.Range(0, 100).Select(i => $"text number {i}"));
        var reports = new List<EngineProgress>();
        CliConsole.ProgressObserved = reports.Add;
        try
        {
            var (code, err) = Run("embed", "--input", input, "--output", PathOf("out.npy"), "--batch-size", "10");
            Assert.True(code == 0, err);
        }
        finally
        {
            CliConsole.ProgressObserved = null;
        }
        var done = reports.Select(r => r.Done).Distinct().ToArray();
        Assert.Equal(Enumerable.Range(1, 10).Select(i => i * 10), done);
        Assert.All(reports, r => Assert.Equal(100, r.Total));
    }

    [Fact]
    public void PipedOutputIsNotWrapped()
    {
        string dir = Path.Combine(_dir, new string('d', 90));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "in.txt"), "one\n");
        string output = Path.Combine(dir, "tokens.jsonl");
        var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, "tokenize", "--input", Path.Combine(dir, "in.txt"), "--output", output])
        { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["COLUMNS"] = "40";
        using (var p = Process.Start(psi)!)
        {
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);
            // The note naming the output stays on one line (Spectre wrapped it at 80 columns, inside the path).
            Assert.Contains(err.Split('\n'), l => l.Contains($"→ {output}", StringComparison.Ordinal));
        }
        psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, "embed", "--help"]) { RedirectStandardOutput = true };
        using (var p = Process.Start(psi)!)
        {
            string help = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            // The --input description is one line however long (System.CommandLine wrapped it at 80 columns).
            Assert.Contains(help.Split('\n'), l => l.Contains("--input", StringComparison.Ordinal) && l.Contains("(with --text-column)", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void TheNotesOfACommandAreNotWrappedWhenStderrIsNotATerminal()
    {
        string dir = Path.Combine(_dir, new string('n', 90));
        Directory.CreateDirectory(dir);
        string input = Path.Combine(dir, "in.txt");
        File.WriteAllText(input, "one\n");
        string output = Path.Combine(dir, "tokens.jsonl");
        var (code, err) = Run("tokenize", "--input", input, "--output", output);
        Assert.True(code == 0, err);
        Assert.Contains(err.Split('\n'), l => l.Contains($"→ {output}", StringComparison.Ordinal));
    }

    private sealed class CountingTokenizer(ITextTokenizer inner) : ITextTokenizer
    {
        public int LongestInput { get; private set; }

        public string Kind => inner.Kind;
        public int VocabSize => inner.VocabSize;
        public int? BosTokenId => inner.BosTokenId;
        public int? EosTokenId => inner.EosTokenId;
        public int? PadTokenId => inner.PadTokenId;
        public int? UnkTokenId => inner.UnkTokenId;
        public IReadOnlyList<int> PrefixTokenIds => inner.PrefixTokenIds;
        public IReadOnlyList<int> SuffixTokenIds => inner.SuffixTokenIds;

        public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
        {
            LongestInput = Math.Max(LongestInput, text.Length);
            return inner.Encode(text, addSpecialTokens);
        }

        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => inner.Decode(ids, skipSpecialTokens);
    }
}
