using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Modeling.DecoderTestSupport;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>
/// Properties every architecture must have, checked on the reference fixtures' tiny models: which positions see
/// which (causal / bidirectional / sliding window), padding on either side changes nothing, bfloat16 stays close to
/// float32, gradients flow.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class DecoderBehaviourTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures => new(FixtureNames);

    private static readonly long[] Sequence = [5, 17, 33, 2, 41, 9, 28, 60];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void LaterTokenChangesEarlierStatesOnlyInBidirectionalMode(string name)
    {
        using var model = LoadFixtureModel(name);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        long[] changed = (long[])Sequence.Clone();
        changed[6] = 11;
        Tensor a = tensor(Sequence, [1, Sequence.Length]), b = tensor(changed, [1, changed.Length]);

        foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
        {
            Tensor ha = model.Forward(a, ones_like(a), mode)[.., ..6];     // positions before the change
            Tensor hb = model.Forward(b, ones_like(b), mode)[.., ..6];
            double diff = MaxAbsDiff(ha, hb);
            output.WriteLine($"{name} {mode}: max change at positions 0-5 = {diff:E2}");
            if (mode == AttentionMode.Causal) Assert.True(diff < 1e-6, $"causal: earlier states changed by {diff}");
            else Assert.True(diff > 1e-3, $"bidirectional: earlier states did not change ({diff})");
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void PaddedBatchEqualsEachSequenceAloneOnRealPositions(string name)
    {
        using var model = LoadFixtureModel(name);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // Phi-3's longrope switches factors above 8 positions (the batch's longest row decides, as in HF): all rows stay below.
        long[][] rows = [Sequence, [7, 3, 19, 44, 50], [12, 8, 30]];
        double worst = 0;
        foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
        {
            var alone = rows.Select(r => model.Forward(tensor(r, [1, r.Length]), ones(1, r.Length, dtype: ScalarType.Int64), mode)[0]).ToArray();
            foreach (bool leftPadding in new[] { false, true })
            {
                var (ids, mask) = Pad(rows, rows.Select(_ => leftPadding).ToArray(), pad: 0);
                Tensor batch = model.Forward(ids, mask, mode);               // [3, 8, H]
                Assert.False(batch.isnan().any().item<bool>(), "padding positions produced NaN");
                for (int r = 0; r < rows.Length; r++)
                {
                    int start = leftPadding ? (int)ids.shape[1] - rows[r].Length : 0;
                    double diff = MaxAbsDiff(batch[r, start..(start + rows[r].Length)], alone[r]);
                    worst = Math.Max(worst, diff);
                    Assert.True(diff < 1e-5, $"{mode}, {(leftPadding ? "left" : "right")} padding, row {r}: differs from the row alone by {diff}");
                }
            }
        }
        output.WriteLine($"{name}: max |padded - alone| = {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void BFloat16AgreesWithFloat32(string name)
    {
        using var f32 = LoadFixtureModel(name);
        using var bf16 = LoadFixtureModel(name, ScalarType.BFloat16);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (ids, mask) = Pad([Sequence, [7, 3, 19, 44, 50], [12, 8, 30]], [false, true, false]);
        foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
        {
            Tensor h32 = f32.Forward(ids, mask, mode);
            Tensor h16 = bf16.Forward(ids, mask, mode);
            Assert.Equal(ScalarType.BFloat16, h16.dtype);
            Tensor p32 = MeanPool(h32, mask), p16 = MeanPool(h16, mask);
            double minCos = nn.functional.cosine_similarity(p32, p16, dim: -1).min().item<float>();
            double maxAbs = MaxAbsDiff(h32 * mask.unsqueeze(-1), h16.to(ScalarType.Float32) * mask.unsqueeze(-1));
            output.WriteLine($"{name} {mode}: bf16 vs fp32 min cosine (mean-pooled) {minCos:F5}, max abs diff of states {maxAbs:E2}");
            Assert.True(minCos > 0.995, $"{mode}: bf16 mean-pooled cosine {minCos}");
        }
    }

    [Theory]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("gemma2")]
    public void SlidingLayersIgnoreKeysBeyondTheWindowOnlyInCausalMode(string name)
    {
        using var model = LoadFixtureModel(name);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int window = model.Traits.SlidingWindow!.Value;
        Assert.True(window < Sequence.Length);
        long[] changed = (long[])Sequence.Clone();
        changed[0] = 11;
        Tensor a = tensor(Sequence, [1, Sequence.Length]), b = tensor(changed, [1, changed.Length]);
        Tensor mask = ones_like(a);

        for (int layer = 0; layer < model.Traits.NumLayers; layer++)
        {
            foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
            {
                // One layer on the embeddings: query i's output depends on token 0 only if it attends to key 0.
                using var inputs = model.PrepareInputs(mask, mode, null, ScalarType.Float32);
                Tensor ha = model.ForwardLayer(layer, model.Embed(a), inputs);
                Tensor hb = model.ForwardLayer(layer, model.Embed(b), inputs);
                double farDiff = MaxAbsDiff(ha[.., window..], hb[.., window..]);  // queries with i - 0 >= window
                bool sliding = model.Traits.SlidingLayers[layer];
                output.WriteLine($"{name} layer {layer} ({(sliding ? "sliding" : "full")}) {mode}: change beyond the window {farDiff:E2}");
                if (sliding && mode == AttentionMode.Causal) Assert.True(farDiff < 1e-6, $"layer {layer}: key 0 reached queries beyond the window ({farDiff})");
                else Assert.True(farDiff > 1e-4, $"layer {layer} {mode}: key 0 should be visible to every query ({farDiff})");
            }
        }
    }

    [Fact]
    public void MasksFollowTheModeAndTheWindow()
    {
        using var model = LoadFixtureModel("mistral");
        using var scope = NewDisposeScope();
        int window = model.Traits.SlidingWindow!.Value;
        var (_, mask) = Pad([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3]], [false, true]);      // row 1: 4 pads on the left
        long t = mask.shape[1];
        float min = (float)finfo(ScalarType.Float32).min;

        using var causal = model.PrepareInputs(mask, AttentionMode.Causal, null, ScalarType.Float32);
        using var bidi = model.PrepareInputs(mask, AttentionMode.Bidirectional, null, ScalarType.Float32);
        Assert.Null(bidi.SlidingMask);
        Assert.NotNull(causal.SlidingMask);
        Assert.Equal(new long[] { 2, 1, 1, t }, bidi.FullMask.shape);                 // one row per sequence, broadcast
        var m = mask.data<long>().ToArray();
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < t; i++)
                for (int j = 0; j < t; j++)
                {
                    bool key = m[r * t + j] == 1, query = m[r * t + i] == 1;
                    bool selfOfPadding = !query && i == j;                       // padding queries see themselves only
                    Assert.Equal(key && j <= i || selfOfPadding ? 0f : min, causal.FullMask[r, 0, i, j].item<float>());
                    Assert.Equal(key && j <= i && i - j < window || selfOfPadding ? 0f : min, causal.SlidingMask![r, 0, i, j].item<float>());
                    Assert.Equal(key ? 0f : min, bidi.FullMask[r, 0, 0, j].item<float>());  // every query sees the real keys
                }
        // Default positions: cumsum(mask) - 1, so the left-padded row's first real token is at position 0.
        using var expectedCos = model.PrepareInputs(ones(1, 3, dtype: ScalarType.Int64), AttentionMode.Causal, null, ScalarType.Float32).Cos;
        Assert.True(MaxAbsDiff(causal.Cos[1, 4..], expectedCos[0]) == 0);
    }

    [Fact]
    public void LinearRopeScalingEqualsDefaultRopeAtScaledPositions()
    {
        // llama_linear has rope_scaling linear with factor 2: position 2p must look exactly like position p unscaled.
        string json = File.ReadAllText(Path.Combine(FixtureFolder("llama_linear"), "config.json"));
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node.Remove("rope_scaling");
        using var scaled = LoadFixtureModel("llama_linear");
        using var plain = LoadModel(ModelConfig.Parse(node.ToJsonString()), FixtureFolder("llama_linear"));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Tensor ids = tensor(Sequence, [1, Sequence.Length]);
        Tensor p = arange(Sequence.Length, dtype: ScalarType.Int64).unsqueeze(0);
        double same = MaxAbsDiff(scaled.Forward(ids, ones_like(ids), AttentionMode.Causal, p * 2), plain.Forward(ids, ones_like(ids), AttentionMode.Causal, p));
        double different = MaxAbsDiff(scaled.Forward(ids, ones_like(ids), AttentionMode.Causal, p), plain.Forward(ids, ones_like(ids), AttentionMode.Causal, p));
        Assert.True(same < 1e-6, $"scaled at 2p vs plain at p: {same}");
        Assert.True(different > 1e-3, $"the scaling had no effect ({different})");
    }

    [Fact]
    public void DynamicNtkRopeChangesOnlyBeyondMaxPositionEmbeddings()
    {
        string json = File.ReadAllText(Path.Combine(FixtureFolder("llama"), "config.json"));
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node.Remove("rope_scaling");
        node["max_position_embeddings"] = 6;
        using var plain = LoadModel(ModelConfig.Parse(node.ToJsonString()), FixtureFolder("llama"));
        node["rope_scaling"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "dynamic", ["factor"] = 4.0 };
        using var dynamic = LoadModel(ModelConfig.Parse(node.ToJsonString()), FixtureFolder("llama"));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Tensor shortIds = tensor(Sequence[..6], [1, 6]), longIds = tensor(Sequence, [1, 8]);
        Assert.True(MaxAbsDiff(plain.Forward(shortIds, ones_like(shortIds), AttentionMode.Causal), dynamic.Forward(shortIds, ones_like(shortIds), AttentionMode.Causal)) == 0);
        Assert.True(MaxAbsDiff(plain.Forward(longIds, ones_like(longIds), AttentionMode.Causal), dynamic.Forward(longIds, ones_like(longIds), AttentionMode.Causal)) > 1e-4);
    }

    [Fact]
    public void FastAttentionPathWithCustomScaleEqualsExplicitPath()
    {
        // Gemma2 without attention soft-capping runs scaled_dot_product_attention with q pre-multiplied to get
        // query_pre_attn_scalar^-0.5; a cap far above every logit makes the explicit path compute the same thing.
        string json = File.ReadAllText(Path.Combine(FixtureFolder("gemma2"), "config.json"));
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node["attn_logit_softcapping"] = null;
        using var fast = LoadModel(ModelConfig.Parse(node.ToJsonString()), FixtureFolder("gemma2"));
        node["attn_logit_softcapping"] = 1e7;
        using var explicitPath = LoadModel(ModelConfig.Parse(node.ToJsonString()), FixtureFolder("gemma2"));
        Assert.Null(fast.Traits.AttentionLogitSoftcap);
        Assert.NotEqual(1.0 / Math.Sqrt(fast.Traits.HeadDim), fast.Traits.AttentionScale);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (ids, mask) = Pad([Sequence, [7, 3, 19, 44, 50]], [false, true]);
        foreach (var mode in new[] { AttentionMode.Causal, AttentionMode.Bidirectional })
        {
            Tensor m = mask.unsqueeze(-1);
            double diff = MaxAbsDiff(fast.Forward(ids, mask, mode) * m, explicitPath.Forward(ids, mask, mode) * m);
            Assert.True(diff < 1e-5, $"{mode}: SDPA and explicit attention differ by {diff}");
        }
    }

    [Fact]
    public void GradientsReachEveryParameter()
    {
        using var model = LoadFixtureModel("gemma2");
        model.train();
        using var scope = NewDisposeScope();
        var (ids, mask) = Pad([Sequence, [7, 3, 19]], [false, true]);
        Tensor hidden = model.Forward(ids, mask, AttentionMode.Bidirectional);
        Tensor loss = model.LanguageModelLogits(MeanPool(hidden, mask)).logsumexp(-1).sum();
        loss.backward();
        foreach (var (n, p) in model.named_parameters())
        {
            Assert.True(p.grad is not null, $"{n} has no gradient");
            Assert.True(p.grad!.abs().sum().item<float>() > 0, $"{n} has a zero gradient");
        }
    }

    [Fact]
    public void BadInputsThrowClearErrors()
    {
        using var model = LoadFixtureModel("llama");
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<UllmeException>(() => model.Forward(tensor(new long[] { 1, 64 }, [1, 2]), ones(1, 2, dtype: ScalarType.Int64), AttentionMode.Causal));
        Assert.Contains("vocab_size", ex.Message);
        ex = Assert.Throws<UllmeException>(() => model.Forward(tensor(new long[] { 1, 2 }, [1, 2]), ones(1, 3, dtype: ScalarType.Int64), AttentionMode.Causal));
        Assert.Contains("attention_mask", ex.Message);
        ex = Assert.Throws<UllmeException>(() => model.Forward(tensor(new long[] { 1, 2 }, [2]), ones(2, dtype: ScalarType.Int64), AttentionMode.Causal));
        Assert.Contains("input_ids", ex.Message);
    }
}
