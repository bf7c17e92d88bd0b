using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>The bundled all-MiniLM-L6-v2: ONNX weights imported into <see cref="BertEncoder"/>, plus the
/// ONNX Runtime session over the same file as the reference.</summary>
public sealed class MiniLmFixture : IDisposable
{
    public ModelConfig Config { get; }
    internal BertEncoder Encoder { get; }
    public InferenceSession Session { get; }
    public IReadOnlyDictionary<string, int> Vocabulary { get; }
    public TimeSpan ImportTime { get; }

    public MiniLmFixture()
    {
        Config = ModelConfig.Parse(DefaultModel.ConfigJson);
        var watch = Stopwatch.StartNew();
        var weights = DefaultModel.ImportWeights(Config);
        ImportTime = watch.Elapsed;
        Encoder = BertEncoder.Create(Config);
        CheckpointLoader.LoadStateDict(Encoder, weights, DefaultModel.OnnxResourceName, ScalarType.Float32, CPU);
        foreach (var t in weights.Values) t.Dispose();

        Session = new InferenceSession(DefaultModel.ReadResource(DefaultModel.OnnxResourceName));
        Vocabulary = DefaultModel.ReadVocabulary().Split('\n').Select((token, id) => (token, id))
            .Where(p => p.token.Length > 0).ToDictionary(p => p.token, p => p.id);
    }

    /// <summary>[CLS] + the ids of the words found whole in the vocabulary + [SEP].</summary>
    public long[] Encode(string text) =>
        [101, .. text.ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(w => Vocabulary.TryGetValue(w, out int id) ? id : 100).Select(id => (long)id), 102];

    public void Dispose()
    {
        Encoder.Dispose();
        Session.Dispose();
    }
}

[Collection(TorchCollection.Name)]
public sealed class BertOnnxParityTests(MiniLmFixture fixture, ITestOutputHelper output) : IClassFixture<MiniLmFixture>
{
    private const string Passage =
        "the quick brown fox jumps over the lazy dog while a small child watches from the window of an old house " +
        "near the river and the sun slowly sets behind the hills as birds return to their nests and people walk home " +
        "after a long day of work in the city where cars and buses fill the streets and music plays from open doors " +
        "while friends meet for dinner and talk about the news of the week";

    /// <summary>Padded batch of real-vocabulary sequences, 3 to 60 tokens long including [CLS]/[SEP].</summary>
    private long[][] Batch()
    {
        string[] words = Passage.Split(' ');
        int[] lengths = [3, 9, 17, 33, 45, 60];
        var sequences = lengths.Select((n, i) => fixture.Encode(string.Join(' ', words.Skip(i * 3).Take(n - 2)))).ToArray();
        Assert.Equal(lengths, sequences.Select(s => s.Length));
        Assert.All(sequences, s => Assert.DoesNotContain(100L, s)); // every word is a real vocabulary entry
        return sequences;
    }

    private static (long[] Ids, long[] Mask, int Tokens) Pad(long[][] sequences)
    {
        int tokens = sequences.Max(s => s.Length);
        var ids = new long[sequences.Length * tokens];
        var mask = new long[sequences.Length * tokens];
        for (int b = 0; b < sequences.Length; b++)
            for (int t = 0; t < sequences[b].Length; t++)
            {
                ids[b * tokens + t] = sequences[b][t];
                mask[b * tokens + t] = 1;
            }
        return (ids, mask, tokens);
    }

    private float[] RunOnnx(long[] ids, long[] mask, int batch, int tokens)
    {
        long[] shape = [batch, tokens];
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, shape);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
        using var typeValue = OrtValue.CreateTensorValueFromMemory(new long[ids.Length], shape);
        using var runOptions = new RunOptions();
        using var results = fixture.Session.Run(runOptions, ["input_ids", "attention_mask", "token_type_ids"],
            [idsValue, maskValue, typeValue], ["last_hidden_state"]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private float[] RunOurs(long[] ids, long[] mask, int batch, int tokens)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var states = fixture.Encoder.Forward(tensor(ids, [batch, tokens]), tensor(mask, [batch, tokens]), AttentionMode.Bidirectional);
        Assert.Equal(new long[] { batch, tokens, 384 }, states.shape);
        return states.data<float>().ToArray();
    }

    /// <summary>sentence-transformers' pooling: mean over the attention mask, then L2 normalisation.</summary>
    private static float[][] MeanPoolNormalize(float[] states, long[] mask, int batch, int tokens, int hidden)
    {
        var result = new float[batch][];
        for (int b = 0; b < batch; b++)
        {
            var sum = new double[hidden];
            int count = 0;
            for (int t = 0; t < tokens; t++)
            {
                if (mask[b * tokens + t] == 0) continue;
                count++;
                for (int h = 0; h < hidden; h++) sum[h] += states[(b * tokens + t) * hidden + h];
            }
            double norm = Math.Sqrt(sum.Sum(x => (x / count) * (x / count)));
            result[b] = sum.Select(x => (float)(x / count / norm)).ToArray();
        }
        return result;
    }

    [Fact]
    public void LastHiddenStateAndPooledEmbeddingsMatchOnnxRuntime()
    {
        var sequences = Batch();
        var (ids, mask, tokens) = Pad(sequences);
        int batch = sequences.Length;

        float[] expected = RunOnnx(ids, mask, batch, tokens);
        float[] actual = RunOurs(ids, mask, batch, tokens);

        Assert.Equal(expected.Length, actual.Length);
        float maxAll = 0, maxReal = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float d = Math.Abs(expected[i] - actual[i]);
            maxAll = Math.Max(maxAll, d);
            if (mask[i / 384] == 1) maxReal = Math.Max(maxReal, d);
        }

        var expectedPooled = MeanPoolNormalize(expected, mask, batch, tokens, 384);
        var actualPooled = MeanPoolNormalize(actual, mask, batch, tokens, 384);
        float maxPooled = 0;
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < 384; h++)
                maxPooled = Math.Max(maxPooled, Math.Abs(expectedPooled[b][h] - actualPooled[b][h]));

        output.WriteLine($"max |ours - ORT| last_hidden_state: {maxAll:E2} (all positions), {maxReal:E2} (real tokens); pooled+normalised: {maxPooled:E2}");
        // Real tokens (what pooling reads) agree to ~3e-6. Padded positions hold states of [PAD] queries that are
        // never used; in the 3-token row they are ill-conditioned (~1e-4 apart, also with ORT's graph optimisations
        // off), so they get a looser bound that still proves HF's position ids for right padding.
        Assert.True(maxReal < 1e-4f, $"last_hidden_state on real tokens differs from ONNX Runtime by {maxReal:E2}");
        Assert.True(maxAll < 1e-3f, $"last_hidden_state on padded positions differs from ONNX Runtime by {maxAll:E2}");
        Assert.True(maxPooled < 1e-4f, $"pooled embeddings differ from ONNX Runtime by {maxPooled:E2}");
    }

    [Fact]
    public void EmbeddingsRankParaphrasesAboveUnrelatedText()
    {
        // A user-level check that the imported model embeds meaning: cosine(paraphrase) > cosine(unrelated).
        string[] texts = ["a man is playing a guitar", "a person plays the guitar", "the stock market fell sharply today"];
        var sequences = texts.Select(fixture.Encode).ToArray();
        Assert.All(sequences, s => Assert.DoesNotContain(100L, s));
        var (ids, mask, tokens) = Pad(sequences);
        var pooled = MeanPoolNormalize(RunOurs(ids, mask, texts.Length, tokens), mask, texts.Length, tokens, 384);
        double Cos(int a, int b) => pooled[a].Zip(pooled[b], (x, y) => (double)x * y).Sum();
        output.WriteLine($"cos(paraphrase) = {Cos(0, 1):F3}, cos(unrelated) = {Cos(0, 2):F3}");
        Assert.True(Cos(0, 1) > Cos(0, 2) + 0.3, $"paraphrase {Cos(0, 1):F3} vs unrelated {Cos(0, 2):F3}");
    }

    [Fact]
    public void WholeOnnxImportRecoversEveryBertWeight()
    {
        var watch = Stopwatch.StartNew();
        var onnx = DefaultModel.ReadOnnx();
        var parsed = watch.Elapsed;
        var weights = OnnxBertImporter.ReadStateDict(onnx);
        var total = watch.Elapsed;
        try
        {
            output.WriteLine($"ONNX import: parse {parsed.TotalMilliseconds:F0} ms, tensors {(total - parsed).TotalMilliseconds:F0} ms, total {total.TotalMilliseconds:F0} ms (fixture incl. validation: {fixture.ImportTime.TotalMilliseconds:F0} ms)");

            // 5 embedding tensors + 16 per layer x 6 + the pooler's 2.
            Assert.Equal(5 + 16 * 6 + 2, weights.Count);
            Assert.Equal(new long[] { 1536, 384 }, weights["encoder.layer.5.intermediate.dense.weight"].shape);
            Assert.Equal(new long[] { 384, 1536 }, weights["encoder.layer.5.output.dense.weight"].shape);

            // The traced query weight of layer 0 is the transpose of the initializer that its MatMul reads.
            var matMul = onnx.Graph.Nodes.First(n => n.OpType == "MatMul" && onnx.Graph.InitializersByName.ContainsKey(n.Inputs[1]));
            using var raw = onnx.Graph.InitializersByName[matMul.Inputs[1]].ToTorch();
            Assert.True(raw.t().allclose(weights["encoder.layer.0.attention.self.query.weight"], rtol: 0, atol: 0));
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }
}
