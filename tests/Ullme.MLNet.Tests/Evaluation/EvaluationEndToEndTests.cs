using Ullme.Cli;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Results;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>The evaluator on real models and real data through the engine and the CLI.</summary>
[Collection(TorchCollection.Name)]
public sealed class EvaluationEndToEndTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-eval-e2e-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// STS Benchmark dev (first 400 pairs) on all-MiniLM-L6-v2 through the engine must agree with an independent
    /// pipeline (ONNX Runtime + HF tokenizers, <see cref="OnnxMiniLmReference"/>): same metric code, different
    /// tokenizer and forward pass. Full dev-split numbers are in docs/evaluation.md.
    /// </summary>
    [AssetFact]
    public void DefaultModelMatchesOnnxReferenceOnStsBenchmarkDev()
    {
        var pairs = StsBenchmarkFormat.Read(Assets.Path("data", "stsbenchmark", "sts-dev.csv")).Take(400).ToList();
        var task = new StsTask("STSBenchmark", new Dictionary<string, IReadOnlyList<StsPair>> { ["validation"] = pairs });

        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        var ours = UllmeEvaluation.Run(model, [task], new EvaluationOptions()).Results[0].Scores["validation"][0];

        using var onnx = new OnnxMiniLmReference();
        var reference = task.Evaluate(new EvaluationContext(onnx))["validation"];

        Assert.Equal(reference["cosine_spearman"], ours["cosine_spearman"], 0.002);
        Assert.Equal(reference["cosine_pearson"], ours["cosine_pearson"], 0.002);
        Assert.InRange(ours["cosine_spearman"], 0.80, 0.95); // all-MiniLM-L6-v2 scores ~0.87 on STS-B dev
    }

    [AssetFact]
    public void ReferenceTokenizerAgreesWithBertUncasedIds()
    {
        // bert-base-uncased ids: hello 7592, world 2088, "," 1010, "!" 999; accents are stripped ("héllo" -> hello).
        using var onnx = new OnnxMiniLmReference();
        Assert.Equal([101, 7592, 2088, 1010, 7592, 999, 102], onnx.Tokenize("Hello world, héllo!"));
    }

    [AssetFact]
    public void CliWritesMtebResultsForASmokeRun()
    {
        string output = Path.Combine(_dir, "results");
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        int code;
        try
        {
            code = UllmeCli.Run(["eval", "--model", Assets.Stories260K, "--tasks", "STSBenchmark,MRPC", "--data-dir", Assets.Path("data"),
                "--output", output, "--limit", "20", "--attention", "causal", "--pooling", "last-token", "--instructions", "off",
                "--revision", "r1"]);
        }
        finally
        {
            Console.SetError(saved);
        }
        Assert.True(code == 0, err.ToString());
        string folder = Path.Combine(output, "stories260K", "r1");
        var sts = TaskResult.Load(Path.Combine(folder, "STSBenchmark.json"));
        Assert.Equal(["train", "validation"], sts.Scores.Keys);
        Assert.InRange(sts.MainScore("validation"), -1, 1);
        var mrpc = TaskResult.Load(Path.Combine(folder, "MRPC.json"));
        Assert.InRange(mrpc.MainScore("train"), 0, 1);
        Assert.True(File.Exists(Path.Combine(folder, "model_meta.json")));
        Assert.Contains("Average", File.ReadAllText(Path.Combine(folder, "summary.md")));
    }

    [AssetFact]
    public void CliReportsABadDataFileAsOneLine()
    {
        string data = Path.Combine(_dir, "data");
        Directory.CreateDirectory(Path.Combine(data, "stsbenchmark"));
        File.WriteAllText(Path.Combine(data, "stsbenchmark", "sts-dev.csv"), "g\tf\t2012\t1\t3.0\tA\tB\ng\tf\t2012\t2\tbad\tA\tB\n");
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        int code;
        try
        {
            code = UllmeCli.Run(["eval", "--model", Assets.Stories260K, "--tasks", "STSBenchmark", "--data-dir", data,
                "--output", Path.Combine(_dir, "out")]);
        }
        finally
        {
            Console.SetError(saved);
        }
        Assert.Equal(1, code);
        string message = err.ToString().Trim();
        Assert.StartsWith("error:", message);
        Assert.Contains("sts-dev.csv:2:", message);
        Assert.DoesNotContain("   at ", message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "out")));
    }

    [AssetFact]
    public void CacheKeyFollowsResolvedSettings()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var engine = new EmbeddingEngine(model);
        string Key(EmbeddingOptions o) => new EngineEmbeddingSource(engine, o).CacheKey;
        var defaults = model.Defaults;
        // An explicit setting equal to the model's default shares cache entries with "default"...
        Assert.Equal(Key(new EmbeddingOptions()), Key(new EmbeddingOptions { Pooling = defaults.Pooling, MaxLength = defaults.MaxLength }));
        // ...anything that changes the vectors does not; the batch size does not change them.
        Assert.NotEqual(Key(new EmbeddingOptions()), Key(new EmbeddingOptions { Pooling = PoolingMode.LastToken }));
        Assert.NotEqual(Key(new EmbeddingOptions()), Key(new EmbeddingOptions { Attention = AttentionMode.Causal }));
        Assert.NotEqual(Key(new EmbeddingOptions()), Key(new EmbeddingOptions { Normalize = false }));
        Assert.Equal(Key(new EmbeddingOptions()), Key(new EmbeddingOptions { BatchSize = 7 }));
    }

    [AssetFact]
    public void DecoderGetsInstructionsByDefaultAndTheyChangeQueryEmbeddings()
    {
        // stories260K is a decoder: InstructionMode.Auto enables instructions; with them off the vectors differ.
        using var model = UllmeModel.Load(Assets.Stories260K);
        var pairs = StsBenchmarkFormat.Read(Assets.Path("data", "stsbenchmark", "sts-dev.csv")).Take(30).ToList();
        var task = new StsTask("STSBenchmark", new Dictionary<string, IReadOnlyList<StsPair>> { ["validation"] = pairs });
        var on = UllmeEvaluation.Run(model, [task], new EvaluationOptions { Attention = AttentionMode.Causal });
        var off = UllmeEvaluation.Run(model, [task], new EvaluationOptions
        {
            Attention = AttentionMode.Causal,
            Instructions = new InstructionOptions { Mode = InstructionMode.Off },
        });
        Assert.NotEqual(on.Results[0].MainScore("validation"), off.Results[0].MainScore("validation"));
    }
}
