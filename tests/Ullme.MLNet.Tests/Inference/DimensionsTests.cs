using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Inference;

/// <summary><see cref="EmbeddingOptions.Dimensions"/> (Matryoshka truncation) in the engine, `ullme embed --dimensions`
/// and `EvaluationOptions.Dimensions`: the first N values of the full embedding, renormalised.</summary>
[Collection(TorchCollection.Name)]
public sealed class DimensionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-dims-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] Texts = ["A man is playing a guitar.", "Two dogs run in the snow", "hi"];

    private static float[] Expected(float[] full, int n, bool normalize)
    {
        var v = full.Take(n).ToArray();
        if (!normalize) return v;
        double norm = Math.Sqrt(v.Sum(x => (double)x * x));
        return v.Select(x => (float)(x / norm)).ToArray();
    }

    [Fact]
    public void TheEngineKeepsTheFirstNDimensionsRenormalised()
    {
        using var model = UllmeModel.Load("default");
        var engine = new EmbeddingEngine(model);
        foreach (bool normalize in new[] { true, false })
        {
            var full = engine.Embed(Texts, new EmbeddingOptions { Normalize = normalize });
            var cut = engine.Embed(Texts, new EmbeddingOptions { Normalize = normalize, Dimensions = 96 });
            for (int i = 0; i < Texts.Length; i++)
            {
                Assert.Equal(96, cut[i].Length);
                var expected = Expected(full[i], 96, normalize);
                for (int j = 0; j < 96; j++) Assert.Equal(expected[j], cut[i][j], 5e-6f);
            }
        }
        Assert.Contains("at most 384", Assert.Throws<UllmeException>(() => engine.Embed(Texts, new EmbeddingOptions { Dimensions = 385 })).Message);
        Assert.Contains("Dimensions", Assert.Throws<UllmeException>(() => engine.Embed(Texts, new EmbeddingOptions { Dimensions = 0 })).Message);
    }

    [Fact]
    public void EmbedDimensionsWritesNarrowerVectors()
    {
        string input = Path.Combine(_dir, "t.txt"), full = Path.Combine(_dir, "full.npy"), cut = Path.Combine(_dir, "cut.npy");
        File.WriteAllLines(input, Texts);
        Assert.Equal(0, CliTests.Run("embed", "--model", "default", "--input", input, "--output", full).Code);
        var (code, err) = CliTests.Run("embed", "--model", "default", "--input", input, "--output", cut, "--dimensions", "64");
        Assert.True(code == 0, err);
        var a = CliTests.ReadNpy(full);
        var b = CliTests.ReadNpy(cut);
        Assert.Equal(64, b.GetLength(1));
        for (int i = 0; i < Texts.Length; i++)
        {
            var expected = Expected(Enumerable.Range(0, 384).Select(j => a[i, j]).ToArray(), 64, normalize: true);
            for (int j = 0; j < 64; j++) Assert.Equal(expected[j], b[i, j], 5e-6f);
        }
        (code, err) = CliTests.Run("embed", "--model", "default", "--input", input, "--output", Path.Combine(_dir, "bad.npy"), "--dimensions", "1000");
        Assert.NotEqual(0, code);
        Assert.Contains("--dimensions", err);
        Assert.False(File.Exists(Path.Combine(_dir, "bad.npy")));
    }

    [AssetFact]
    public void EvaluationScoresTheTruncatedEmbeddings()
    {
        var pairs = StsBenchmarkFormat.Read(Assets.Path("data", "stsbenchmark", "sts-dev.csv")).Take(200).ToList();
        var task = new StsTask("STSBenchmark", new Dictionary<string, IReadOnlyList<StsPair>> { ["validation"] = pairs });
        using var model = UllmeModel.Load("default");
        double full = UllmeEvaluation.Run(model, [task], new EvaluationOptions()).Results[0].Scores["validation"][0]["cosine_spearman"];
        double cut = UllmeEvaluation.Run(model, [task], new EvaluationOptions { Dimensions = 32 }).Results[0].Scores["validation"][0]["cosine_spearman"];
        // 32 of 384 dimensions of a model not trained for Matryoshka: a real but smaller score.
        Assert.NotEqual(full, cut);
        Assert.InRange(cut, 0.3, full);
    }
}
