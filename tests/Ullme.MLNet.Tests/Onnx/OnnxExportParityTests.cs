using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Modeling.DecoderTestSupport;
using static Ullme.MLNet.Tests.Onnx.OnnxTestSupport;

namespace Ullme.MLNet.Tests.Onnx;

/// <summary>
/// The exported float32 graph on ONNX Runtime against the TorchSharp engine: every architecture's tiny random
/// checkpoint (Llama with llama3 and linear RoPE scaling, Mistral and Qwen2 with sliding windows, Phi-3 with longrope
/// and partial rotary, Gemma2 with soft-capping and sandwich norms), both attention modes, left and right padding and
/// an instruction kept out of pooling: token states at real positions and pooled embeddings within 1e-4.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class OnnxExportParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string, AttentionMode, PoolingMode> Cases()
    {
        var data = new TheoryData<string, AttentionMode, PoolingMode>();
        foreach (string name in FixtureNames)
            foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
                data.Add(name, mode, mode == AttentionMode.Causal ? PoolingMode.LastToken : PoolingMode.Mean);
        data.Add("qwen2", AttentionMode.Bidirectional, PoolingMode.WeightedMean);
        data.Add("llama", AttentionMode.Bidirectional, PoolingMode.FirstToken);
        return data;
    }

    /// <summary>Rows of 3 to 13 tokens (beyond the fixtures' sliding window of 4 and Phi-3's original context of 8),
    /// the first two left-padded; row 1 has a 2-token instruction prefix outside its pooling mask.</summary>
    internal static (Tensor Ids, Tensor Mask, Tensor PoolingMask) Batch(int vocab, int longest = 13)
    {
        var rng = new Random(7);
        int[] lengths = [longest, 5, 3, Math.Max(3, longest - 4)];
        var rows = lengths.Select(n => Enumerable.Range(0, n).Select(_ => (long)rng.Next(1, vocab)).ToArray()).ToList();
        var (ids, mask) = Pad(rows, [true, true, false, false]);
        var pooling = mask.clone();
        // Row 1 is left-padded: its real tokens start at T - 5; the first two are the instruction.
        long t = ids.shape[1];
        pooling[1, t - 5] = 0;
        pooling[1, t - 4] = 0;
        return (ids, mask, pooling);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DecoderGraphMatchesTorch(string name, AttentionMode mode, PoolingMode pooling)
    {
        using var model = LoadFixtureModel(name);
        using var noGrad = no_grad();
        using var session = Session(model, model.Config, mode, pooling, normalize: true);
        foreach (int longest in new[] { 7, 13 })
        {
            using var scope = NewDisposeScope();
            var (ids, mask, poolMask) = Batch(model.Config.VocabSize, longest);
            var hidden = model.Forward(ids, mask, mode);
            var pooled = Pooler.Normalize(Pooler.Pool(hidden, mask, poolMask, pooling));
            var (sentence, tokens) = Run(session, ids, mask, poolMask);
            double tokenErr = MaxDiffAtRealTokens(tokens, hidden, mask), sentenceErr = MaxDiff(sentence, pooled);
            output.WriteLine($"{name} {mode} {pooling} T={ids.shape[1]}: token {tokenErr:E2}, sentence {sentenceErr:E2}");
            Assert.True(tokenErr < Tolerance, $"{name}/{mode}/T={ids.shape[1]}: token states differ by {tokenErr}");
            Assert.True(sentenceErr < Tolerance, $"{name}/{mode}/{pooling}/T={ids.shape[1]}: sentence embeddings differ by {sentenceErr}");
        }
    }

    [Fact]
    public void OpsetsAndTheTwoInputInterfaceAgree()
    {
        using var model = LoadFixtureModel("gemma2");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (ids, mask, _) = Batch(model.Config.VocabSize);
        var hidden = model.Forward(ids, mask, AttentionMode.Causal);
        var pooled = Pooler.Pool(hidden, mask, null, PoolingMode.Mean);
        foreach (int opset in new[] { 17, 18, 21 })
        {
            using var session = Session(model, model.Config, AttentionMode.Causal, PoolingMode.Mean, normalize: false, opset: opset, poolingMaskInput: false);
            Assert.False(session.InputMetadata.ContainsKey("pooling_mask"));
            var (sentence, _) = Run(session, ids, mask, null);
            Assert.True(MaxDiff(sentence, pooled) < Tolerance, $"opset {opset}: {MaxDiff(sentence, pooled)}");
        }
    }

    [AssetFact]
    public void Stories260KMatchesTorch()
    {
        using var model = LoadStories260K();
        using var noGrad = no_grad();
        foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
        {
            using var scope = NewDisposeScope();
            using var session = Session(model, model.Config, mode, PoolingMode.Mean, normalize: false);
            var (ids, mask, poolMask) = Batch(model.Config.VocabSize, 40);
            var hidden = model.Forward(ids, mask, mode);
            var pooled = Pooler.Pool(hidden, mask, poolMask, PoolingMode.Mean);
            var (sentence, tokens) = Run(session, ids, mask, poolMask);
            double tokenErr = MaxDiffAtRealTokens(tokens, hidden, mask), sentenceErr = MaxDiff(sentence, pooled);
            output.WriteLine($"stories260K {mode}: token {tokenErr:E2}, sentence {sentenceErr:E2}");
            Assert.True(tokenErr < Tolerance && sentenceErr < Tolerance, $"stories260K {mode}: {tokenErr} / {sentenceErr}");
        }
    }
}
