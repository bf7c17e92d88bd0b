using TorchSharp;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Losses;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training;

/// <summary>
/// Behavioural checks of the training objective that a wrong sign or a wrong side would fail: a DPO step must
/// prefer the positive over the rejected negative, the GRL step must pull the representation toward the
/// (detached) generation distribution and not the reverse, and the replayed random stream of GradCache and
/// activation checkpointing must not depend on what runs between the passes (the generation forwards).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class TrainingCorrectnessTests(ITestOutputHelper output)
{
    // ---- the objective alone: autograd on leaf inputs ----

    /// <summary>Two queries with a positive and two negatives each: rows 0–2 and 3–5 (positive first).</summary>
    private static GenerationBatch Rows()
    {
        var rows = new List<TokenScoreRequest>();
        for (int r = 0; r < 6; r++) rows.Add(new TokenScoreRequest([1, 4 + r, 5, 6 + r, 7, 8], 3));
        return GenerationBatch.Create(rows, [[0, 1, 2], [3, 4, 5]], [-1, 0, 1, -1, 2, 3], 0, CPU);
    }

    private static readonly List<TrainingExample> TwoQueries =
    [
        new("q0", "p0", ["n00", "n01"]),
        new("q1", "p1", ["n10", "n11"]),
    ];

    /// <summary>Token log-probs [6, 6] with the given per-row value on the three scored tokens.</summary>
    private static Tensor LogProbs(double[] perRow)
    {
        var data = new double[6 * 6];
        for (int r = 0; r < 6; r++) for (int t = 3; t < 6; t++) data[r * 6 + t] = perRow[r];
        return tensor(data, [6, 6], ScalarType.Float64).requires_grad_(true);
    }

    [Fact]
    public void ThePreferenceGradientRaisesThePositiveAndLowersTheMostLikelyNegative()
    {
        using var scope = NewDisposeScope();
        var objective = new TrainingObjective(new FineTuneOptions { Weights = new LossWeights(0, 0, 1, 0), Lora = null });
        var gen = Rows();
        // Query 0: its second negative is the more likely (row 2); query 1: its first (row 4).
        var lp = LogProbs([-2.0, -3.0, -2.5, -1.5, -1.0, -4.0]);
        var tally = objective.Begin(TwoQueries, gen);
        var loss = objective.Generation(tally, gen, lp, null, (_, sums) => sums.detach())!;   // π_ref = π: DPO = ln 2
        Close(Math.Log(2), objective.Breakdown(tally).Preference!.Value, 1e-6, "DPO at π = π_ref");
        loss.backward();
        var g = Data(lp.grad!);
        double RowGrad(int r) => g[r * 6 + 3];
        // Gradient descent moves log π(p⁺) up and log π(hardest negative) down; the other negative is not in a pair.
        Assert.True(RowGrad(0) < 0 && RowGrad(3) < 0, $"positives: {RowGrad(0)}, {RowGrad(3)}");
        Assert.True(RowGrad(2) > 0 && RowGrad(4) > 0, $"rejected: {RowGrad(2)}, {RowGrad(4)}");
        Assert.Equal(0.0, RowGrad(1));
        Assert.Equal(0.0, RowGrad(5));
    }

    /// <summary>KL(P_gen ‖ P_rep) per grl-spec.md, computed here independently of the library's loss.</summary>
    private static double Kl(double[] q, double[] p, double[] n, int h, double[] genMeans)
    {
        double[] Row(double[] m, int i) => m.Skip(i * h).Take(h).ToArray();
        double Cos(double[] a, double[] b) => a.Zip(b).Sum(x => x.First * x.Second) / Math.Sqrt(a.Sum(x => x * x) * b.Sum(x => x * x));
        double[] Softmax(double[] z) { double m = z.Max(); var e = z.Select(x => Math.Exp(x - m)).ToArray(); double s = e.Sum(); return e.Select(x => x / s).ToArray(); }
        double kl = 0;
        for (int i = 0; i < 2; i++)
        {
            var cands = new[] { Row(p, i), Row(n, 2 * i), Row(n, 2 * i + 1) };
            var rep = Softmax(cands.Select(c => Cos(Row(q, i), c) / 0.05).ToArray());
            var gen = Softmax(genMeans.Skip(3 * i).Take(3).ToArray());
            kl += gen.Zip(rep).Sum(x => x.First * Math.Log(x.First / x.Second));
        }
        return kl / 2;
    }

    [Fact]
    public void TheConsistencyGradientReachesOnlyTheRepresentationAndPullsItTowardTheGenerationDistribution()
    {
        using var scope = NewDisposeScope();
        var objective = new TrainingObjective(new FineTuneOptions { Weights = new LossWeights(0, 0, 0, 1), Lora = null });
        var gen = Rows();
        var means = new[] { -1.0, -3.0, -2.0, -2.5, -0.5, -4.0 };
        var lp = LogProbs(means);
        const int h = 5;
        manual_seed(4);
        var e = new EmbeddingInputs(randn(2, h, dtype: ScalarType.Float64).requires_grad_(true),
            randn(2, h, dtype: ScalarType.Float64).requires_grad_(true), randn(4, h, dtype: ScalarType.Float64).requires_grad_(true));
        var tally = objective.Begin(TwoQueries, gen);
        var loss = objective.Generation(tally, gen, lp, e, (_, s) => s.detach())!;
        double before = Kl(Data(e.Queries), Data(e.Positives), Data(e.Negatives!), h, means);
        Close(before, objective.Breakdown(tally).Consistency!.Value, 1e-6, "KL(P_gen ‖ P_rep)");
        loss.backward();

        // The generation side is the teacher: no gradient reaches it.
        Assert.True(lp.grad is null || Data(lp.grad).All(x => x == 0), "the generation log-probs received a gradient");
        var grads = new[] { e.Queries, e.Positives, e.Negatives! }.Select(t => Data(t.grad!)).ToArray();
        Assert.All(grads, g => Assert.True(g.Max(Math.Abs) > 1e-6, "a representation input received no gradient"));

        // A small step against the gradient brings P_rep closer to the unchanged P_gen.
        const double lr = 1e-3;
        double[] Step(Tensor t, double[] g) => Data(t).Zip(g).Select(x => x.First - lr * x.Second).ToArray();
        double after = Kl(Step(e.Queries, grads[0]), Step(e.Positives, grads[1]), Step(e.Negatives!, grads[2]), h, means);
        output.WriteLine($"KL(P_gen ‖ P_rep): {before:F6} -> {after:F6}");
        Assert.True(after < before - 1e-6, $"KL went from {before} to {after}");
    }

    // ---- the trainer on a tiny random decoder ----

    /// <summary>mean over queries of log π(p⁺|q) − mean over its negatives of log π(n|q), scored by the engine.</summary>
    private static double Margin(UllmeModel model, IReadOnlyList<TrainingExample> data)
    {
        var scorer = new RelevanceScorer(new EmbeddingEngine(model), new RelevanceOptions { GenerationScore = GenerationScore.Sum });
        var pairs = data.SelectMany(e => new[] { e.Positive }.Concat(e.Negatives).Select(c => new QueryPassage(e.Query, c))).ToList();
        var s = scorer.Generation(pairs);
        double total = 0;
        int k = 0;
        foreach (var e in data)
        {
            double positive = s[k];
            double negatives = s.Skip(k + 1).Take(e.Negatives.Count).Select(x => (double)x).Average();
            total += positive - negatives;
            k += 1 + e.Negatives.Count;
        }
        return total / data.Count;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AFewDpoStepsRaiseTheLogProbabilityOfThePositiveOverTheNegatives(bool lora)
    {
        // At the base weights DPO is ln 2 for any pairing, so only the effect of a step can tell chosen from rejected.
        var data = TinyDecoder.Examples(8, seed: 21);
        using var model = TinyDecoder.Load();
        double before = Margin(model, data);
        var options = new FineTuneOptions
        {
            Weights = new LossWeights(0, 0, 1, 0), Lora = lora ? new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 } : null,
            BatchSize = 8, MaxSteps = 5, Shuffle = false, WarmupSteps = 0, Beta = 0.5, MaxLength = 32,
            Optimizer = new() { LearningRate = lora ? 3e-2 : 1e-2 },
        };
        var result = new UllmeFineTuner(model, options).Train(data);
        double after = Margin(model, data);
        output.WriteLine($"margin {before:F4} -> {after:F4}; DPO {result.History[0].Losses.Preference:F4} -> {result.History[^1].Losses.Preference:F4}");
        Assert.True(after > before + 0.5, $"log p(positive) − log p(negative) went from {before} to {after}");
        Assert.True(result.History[^1].Losses.Preference < result.History[0].Losses.Preference);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GradCacheTrainingEqualsPlainTrainingWithDropoutAndGenerationTerms(bool checkpointing)
    {
        // Dropout in the adapters draws masks in the embedding passes and in the generation passes. GradCache replays
        // the embedding passes after the generation passes; the replay must draw the pass-1 masks and then leave the
        // random stream where the generation passes left it, or the next step draws other masks than plain training.
        var data = TinyDecoder.Examples(8, seed: 5);
        (double[] Losses, Dictionary<string, float[]> Adapters) Run(int? gradCache, bool gradientCheckpointing)
        {
            using var model = TinyDecoder.Load();
            var options = new FineTuneOptions
            {
                Weights = new LossWeights(1, 0.5, 1, 1), Lora = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0.2 },
                BatchSize = 4, MaxSteps = 3, Seed = 13, Shuffle = false, WarmupSteps = 0, MaxLength = 32, MergeLoraAtEnd = false,
                GradCacheChunkSize = gradCache, GradientCheckpointing = gradientCheckpointing, Optimizer = new() { LearningRate = 1e-2 },
            };
            var result = new UllmeFineTuner(model, options).Train(data);
            return (result.History.Select(p => p.Losses.Total).ToArray(),
                LoraInjector.AdapterParameters(model.Backbone).ToDictionary(p => p.Name, p => p.Parameter.detach().cpu().data<float>().ToArray()));
        }
        var plain = Run(null, false);
        // One chunk per length bucket (64 ≥ the batch's 4 queries, 4 positives and their negatives), so pass 1 draws
        // exactly the plain forward's masks.
        var cached = Run(64, checkpointing);
        output.WriteLine($"plain {string.Join(", ", plain.Losses.Select(x => x.ToString("F6")))}; GradCache {string.Join(", ", cached.Losses.Select(x => x.ToString("F6")))}");
        Close(plain.Losses, cached.Losses, 1e-5, "losses per step");
        foreach (var (name, w) in plain.Adapters)
            Close(w.Select(x => (double)x).ToArray(), cached.Adapters[name].Select(x => (double)x).ToArray(), 1e-5, name);
    }

    [Fact]
    public void FullFineTuningWithAPreferenceTermReportsTheReferenceCacheTimeApart()
    {
        var data = TinyDecoder.Examples(8, seed: 6);
        FineTuneResult Run(TrainingStrategy strategy, LoraOptions? lora)
        {
            using var model = TinyDecoder.Load();
            return new UllmeFineTuner(model, new FineTuneOptions { Strategy = strategy, Lora = lora, BatchSize = 4, MaxSteps = 2, MaxLength = 32 }).Train(data);
        }
        Assert.True(Run(TrainingStrategy.Grl, null).ReferenceCacheTime > TimeSpan.Zero);
        Assert.Equal(TimeSpan.Zero, Run(TrainingStrategy.Grl, new LoraOptions { Rank = 2 }).ReferenceCacheTime);   // adapters off = the reference
        Assert.Equal(TimeSpan.Zero, Run(TrainingStrategy.Contrastive, null).ReferenceCacheTime);
    }

    // ---- the replayed random stream ----

    [Fact]
    public void GradCacheReplayIsIndependentOfTheDrawsBetweenItsPassesAndLeavesThemInPlace()
    {
        manual_seed(3);
        using var model = new TinyBackbone(dropoutP: 0.3);
        model.train();
        var groups = new[] { 1, 2, 3 }.Select(seed => TokenBatchOf(seed)).ToArray();
        var loss = new ContrastiveLoss { Temperature = 0.05 };
        Func<TokenBatch, Tensor> embed = b => TinyBackbone.MeanPool(model.Forward(b.InputIds, b.AttentionMask, AttentionMode.Bidirectional), b.EffectivePoolingMask);

        Dictionary<string, double[]> Grads(int drawsBetween, out double[] expectedNext, out double[] actualNext)
        {
            using var scope = NewDisposeScope();
            manual_seed(99);
            model.zero_grad();
            using var cache = new GradCache(2).Forward(groups, embed);
            var e = cache.Embeddings;
            loss.Compute(e[0], e[1], e[2]).backward();
            // What a GRL step runs between the passes: generation forwards that draw dropout masks.
            if (drawsBetween > 0) _ = rand(drawsBetween, dtype: ScalarType.Float64);
            var state = ReplayableDropout.CaptureState();
            cache.Backward();
            actualNext = Data(rand(3, dtype: ScalarType.Float64));
            ReplayableDropout.RestoreState(state);
            expectedNext = Data(rand(3, dtype: ScalarType.Float64));
            return model.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => Data(p.parameter.grad!));
        }

        var quiet = Grads(0, out _, out _);
        var busy = Grads(1000, out var expectedNext, out var actualNext);
        Assert.True(quiet.Count >= 9);
        foreach (var (name, g) in quiet) Close(g, busy[name], 1e-12, name);
        // After the replay the stream continues from where the in-between draws left it (not rewound to pass 1).
        Assert.Equal(expectedNext, actualNext);
    }

    [Fact]
    public void ActivationCheckpointReplayIsIndependentOfTheDrawsBetweenForwardAndBackward()
    {
        manual_seed(5);
        var linear = nn.Linear(6, 6, dtype: ScalarType.Float64);
        var dropout = new ReplayableDropout(0.4);
        dropout.train();
        Tensor Block(Tensor x) => dropout.forward(linear.forward(x)).tanh();

        double[] Grad(bool checkpoint, int drawsBetween)
        {
            using var scope = NewDisposeScope();
            linear.zero_grad();
            manual_seed(42);
            var x = randn(4, 6, dtype: ScalarType.Float64);
            var y = checkpoint ? ActivationCheckpoint.Apply(Block, x) : Block(x);
            if (drawsBetween > 0) _ = rand(drawsBetween, dtype: ScalarType.Float64);
            var state = ReplayableDropout.CaptureState();
            y.square().sum().backward();
            using var now = ReplayableDropout.CaptureState();
            Assert.Equal(state.data<byte>().ToArray(), now.data<byte>().ToArray());   // the backward leaves the stream in place
            return Data(linear.weight!.grad!);
        }
        var plain = Grad(false, 0);
        Close(plain, Grad(true, 0), 1e-12, "checkpointed");
        Close(plain, Grad(true, 1000), 1e-12, "checkpointed, with draws before the backward");
    }

    [Fact]
    public void ReplayableDropoutDrawsNnDropoutsMasksFromTheHostGenerator()
    {
        using var scope = NewDisposeScope();
        var x = randn(3, 5, 7);
        var reference = nn.Dropout(0.3);
        reference.train();
        var replayable = new ReplayableDropout(0.3);
        replayable.train();
        manual_seed(8);
        var a = reference.forward(x);
        manual_seed(8);
        var b = replayable.forward(x);
        Assert.Equal(Data(a), Data(b));   // same generator state, same masks, same bits as nn.Dropout on CPU
        Assert.Contains(0.0, Data(b));
        Assert.NotEqual(Data(x), Data(b));

        var state = ReplayableDropout.CaptureState();
        var c = replayable.forward(x);
        ReplayableDropout.RestoreState(state);
        Assert.Equal(Data(c), Data(replayable.forward(x)));   // restoring the source replays the mask

        replayable.eval();
        Assert.Equal(Data(x), Data(replayable.forward(x)));   // eval mode is the identity
    }

    /// <summary>A right-padded batch of five rows of random ids (lengths 2–8).</summary>
    private static TokenBatch TokenBatchOf(int seed)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, 5).Select(_ => new TokenScoreRequest(Enumerable.Range(0, rng.Next(2, 9)).Select(_ => rng.Next(1, 11)).ToArray(), 1)).ToList();
        var batch = TokenBatch.Build(rows, 0, CPU);
        return batch with { ScoreMask = null };
    }
}
