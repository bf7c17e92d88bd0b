using Microsoft.ML;
using Ullme.MLNet.Extensions.AI;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Cli;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.Options;

/// <summary>
/// Every surface (the engine's records, the ML.NET options, the Microsoft.Extensions.AI generator, the CLI) refuses
/// the same invalid values with the same message, modulo the name: the C# property for C# callers, the flag for CLI
/// users. The rules live in the engine's records; the surfaces delegate to them.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class OptionParityTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-parity-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly int TooManyThreads = Environment.ProcessorCount + 1;

    /// <summary>One invalid value: what every surface must say about it, after the option's name.</summary>
    public sealed record Case(string Name, string Problem);

    public static TheoryData<string> Cases => new(
        "MaxLength 0", "MaxLength -1", "BatchSize 0", "BatchSize 2147483647", "MixWeight 2", "MixWeight -0.5",
        "Threads too many", "Threads 0", "Pooling max", "Device tpu");

    /// <summary>The problem text every surface must give for <paramref name="name"/>, and each surface's attempt:
    /// (the name that surface must show, the action that must throw).</summary>
    private (string Problem, List<(string Shown, Action Act)> Surfaces) Build(string name, Lazy<EmbeddingEngine> engine)
    {
        string input = Path.Combine(_dir, "in.txt");
        string rerankInput = Path.Combine(_dir, "in.jsonl");
        File.WriteAllText(input, "a text\n");
        File.WriteAllText(rerankInput, "{\"query\": \"q\", \"candidates\": [\"a\", \"b\"]}\n");
        string[] Embed(params string[] extra) => ["embed", "--input", input, "--output", Path.Combine(_dir, "out.npy"), .. extra];
        string[] Rerank(params string[] extra) => ["rerank", "--input", rerankInput, "--output", Path.Combine(_dir, "out.jsonl"), .. extra];
        Action Cli(string[] args) => () =>
        {
            var (code, err) = CliTests.Run(args);
            Assert.Equal(1, code);
            throw new UllmeException(err.Trim().StartsWith("error: ", StringComparison.Ordinal) ? err.Trim()["error: ".Length..] : err.Trim());
        };
        var ml = new MLContext();
        switch (name)
        {
            case "MaxLength 0":
            case "MaxLength -1":
            {
                int v = name.EndsWith("-1", StringComparison.Ordinal) ? -1 : 0;
                return ($"must be at least 2 tokens (got {v})",
                [
                    ("EmbeddingOptions.MaxLength", () => new EmbeddingOptions { MaxLength = v }.Validate()),
                    ("EmbeddingOptions.MaxLength", () => engine.Value.Embed(["x"], new EmbeddingOptions { MaxLength = v })),
                    ("EmbeddingOptions.MaxLength", () => new UllmeEmbeddingGenerator(engine.Value, new EmbeddingOptions { MaxLength = v })),
                    ("EmbeddingOptions.MaxLength", () => new RelevanceOptions { Embedding = new() { MaxLength = v } }.Validate()),
                    ("UllmeEmbeddingOptions.MaxLength", () => ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { MaxLength = v })),
                    ("UllmeScoreOptions.MaxLength", () => new UllmeScoreOptions { MaxLength = v }.Validate(modelIsLoaded: true)),
                    ("FineTuneOptions.MaxLength", () => new FineTuneOptions { MaxLength = v }.Validate()),
                    ("GrlTrainerOptions.FineTune.MaxLength", () => new GrlTrainerOptions { FineTune = new() { MaxLength = v } }.Validate(modelIsLoaded: true)),
                    ("--max-length", Cli(Embed("--max-length", v.ToString(System.Globalization.CultureInfo.InvariantCulture)))),
                ]);
            }
            case "BatchSize 0":
            case "BatchSize 2147483647":
            {
                int v = name.EndsWith(" 0", StringComparison.Ordinal) ? 0 : int.MaxValue;
                string s = v.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return ($"must be between 1 and 65536 (got {v})",
                [
                    ("EmbeddingOptions.BatchSize", () => new EmbeddingOptions { BatchSize = v }.Validate()),
                    ("EmbeddingOptions.BatchSize", () => engine.Value.Embed(["x"], new EmbeddingOptions { BatchSize = v })),
                    ("EmbeddingOptions.BatchSize", () => new UllmeEmbeddingGenerator(engine.Value, new EmbeddingOptions { BatchSize = v })),
                    ("RelevanceOptions.GenerationBatchSize", () => new RelevanceOptions { GenerationBatchSize = v }.Validate()),
                    ("UllmeEmbeddingOptions.BatchSize", () => ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { BatchSize = v })),
                    ("UllmeScoreOptions.BatchSize", () => new UllmeScoreOptions { BatchSize = v }.Validate(modelIsLoaded: true)),
                    ("FineTuneOptions.BatchSize", () => new FineTuneOptions { BatchSize = v }.Validate()),
                    ("GrlTrainerOptions.FineTune.BatchSize", () => new GrlTrainerOptions { FineTune = new() { BatchSize = v } }.Validate(modelIsLoaded: true)),
                    ("--batch-size", Cli(Embed("--batch-size", s))),
                    ("--batch-size", Cli(Rerank("--batch-size", s))),
                ]);
            }
            case "MixWeight 2":
            case "MixWeight -0.5":
            {
                double v = name.EndsWith(" 2", StringComparison.Ordinal) ? 2 : -0.5;
                string s = v.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return ($"must be between 0 and 1 (got {s})",
                [
                    ("RerankOptions.MixWeight", () => new RerankOptions { MixWeight = v }.Validate()),
                    ("RerankOptions.MixWeight", () => new Reranker(engine.Value, new RerankOptions { MixWeight = v })),
                    ("--mix-weight", Cli(Rerank("--mix-weight", s))),
                ]);
            }
            case "Threads too many":
            case "Threads 0":
            {
                int v = name.EndsWith(" 0", StringComparison.Ordinal) ? 0 : TooManyThreads;
                string s = v.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return ($"must be between 1 and {Environment.ProcessorCount} (this machine's cores) (got {v})",
                [
                    ("ModelLoadOptions.Threads", () => new ModelLoadOptions { Threads = v }.Validate()),
                    ("ModelLoadOptions.Threads", () => UllmeModel.Load("default", new ModelLoadOptions { Threads = v }).Dispose()),
                    ("ModelLoadOptions.Threads", () => UllmeEmbeddingGenerator.Load("default", loadOptions: new ModelLoadOptions { Threads = v }).Dispose()),
                    ("--threads", Cli(Embed("--threads", s))),
                    ("--threads", Cli(Rerank("--threads", s))),
                ]);
            }
            case "Pooling max":
                return ("'max' is not a known pooling: use mean, weighted-mean, last-token or first-token",
                [
                    ("EmbeddingOptions.Pooling", () => Pooler.Parse("max")),
                    ("EmbeddingOptions.Pooling", () => OptionNames.Pooling.Parse("max", "EmbeddingOptions.Pooling")),
                    ("--pooling", Cli(Embed("--pooling", "max"))),
                ]);
            case "Device tpu":
                return ("must be \"cpu\", \"cuda\" or \"cuda:N\" (got 'tpu')",
                [
                    ("ModelLoadOptions.Device", () => new ModelLoadOptions { Device = "tpu" }.Validate()),
                    ("ModelLoadOptions.Device", () => UllmeModel.Load("default", new ModelLoadOptions { Device = "tpu" }).Dispose()),
                    ("UllmeEmbeddingOptions.Device", () => ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { Device = "tpu" })),
                    ("UllmeScoreOptions.Device", () => new UllmeScoreOptions { Device = "tpu" }.Validate(modelIsLoaded: true)),
                    ("--device", Cli(Embed("--device", "tpu"))),
                ]);
            default:
                throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EverySurfaceRefusesTheSameValueWithTheSameMessage(string name)
    {
        using var model = new LazyModel();
        var (problem, surfaces) = Build(name, model.Engine);
        Assert.True(surfaces.Count >= 3, "a case must cover several surfaces");
        foreach (var (shown, act) in surfaces)
        {
            var e = Assert.ThrowsAny<UllmeException>(act);
            Assert.Equal($"{shown} {problem}.", e.Message);
        }
    }

    [Fact]
    public void TheEngineNamesTheOptionAndTheSurfaceRenamesIt()
    {
        var e = Assert.Throws<UllmeException>(() => new RerankOptions { MixWeight = 2 }.Validate());
        Assert.Equal("RerankOptions.MixWeight", e.Option);
        Assert.Equal("must be between 0 and 1 (got 2)", e.Problem);
        Assert.Equal("--mix-weight must be between 0 and 1 (got 2).", e.As("--mix-weight").Message);
        Assert.Equal("UllmeScoreOptions.BatchSize must be between 1 and 65536 (got 0).",
            Assert.Throws<UllmeException>(() => new UllmeScoreOptions { BatchSize = 0 }.Validate(modelIsLoaded: true)).Message);
    }

    [Fact]
    public void OneTableNamesEveryEnumValueAndParsesItsOwnNames()
    {
        foreach (var mode in Enum.GetValues<PoolingMode>())
            Assert.Equal(mode, OptionNames.Pooling.Parse(OptionNames.Pooling.ToName(mode), "x"));
        foreach (var mode in Enum.GetValues<Ullme.MLNet.Modeling.AttentionMode>())
            Assert.Equal(mode, OptionNames.Attention.Parse(OptionNames.Attention.ToName(mode), "x"));
        foreach (var mode in Enum.GetValues<Ullme.MLNet.Modeling.ModelDType>())
            Assert.Equal(mode, OptionNames.DType.Parse(OptionNames.DType.ToName(mode), "x"));
        foreach (var mode in Enum.GetValues<RerankBy>())
            Assert.Equal(mode, OptionNames.RerankBy.Parse(OptionNames.RerankBy.ToName(mode), "x"));
        foreach (var mode in Enum.GetValues<GenerationScore>())
            Assert.Equal(mode, OptionNames.GenerationScore.Parse(OptionNames.GenerationScore.ToName(mode), "x"));
        // Every value has its own name (a value missing from a table would print as its C# name).
        Assert.Equal(["mean", "weighted-mean", "last-token", "first-token"], OptionNames.Pooling.Names);
        Assert.Equal(["bidirectional", "causal"], OptionNames.Attention.Names);
        Assert.Equal(PoolingMode.FirstToken, OptionNames.Pooling.Parse(" CLS ", "x"));
        Assert.Equal(PoolingMode.LastToken, OptionNames.Pooling.Parse("last_token", "x"));
    }

    /// <summary>The default model, loaded only by the cases that need an engine.</summary>
    private sealed class LazyModel : IDisposable
    {
        private readonly Lazy<UllmeModel> _model = new(() => UllmeModel.Load("default"));

        public LazyModel() => Engine = new Lazy<EmbeddingEngine>(() => new EmbeddingEngine(_model.Value));

        public Lazy<EmbeddingEngine> Engine { get; }

        public void Dispose()
        {
            if (_model.IsValueCreated) _model.Value.Dispose();
        }
    }
}
