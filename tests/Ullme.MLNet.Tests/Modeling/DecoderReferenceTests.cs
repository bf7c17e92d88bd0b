using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Modeling.DecoderTestSupport;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>
/// Each architecture's tiny random model against the independent float64 reference
/// (tests/reference/decoder_reference.py, which re-derives HF's forward passes): final states and logits of a batch
/// mixing left and right padding, in causal and bidirectional mode, must agree within 1e-4 on every real position.
/// Also checks that the parameter names are exactly HF's checkpoint keys.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class DecoderReferenceTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Fixtures => new(FixtureNames);

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void StatesAndLogitsMatchReferenceInBothModes(string name)
    {
        using var model = LoadFixtureModel(name);
        var expected = FixtureExpected(name);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var batches = expected.Keys.Where(k => k.StartsWith("input_ids_", StringComparison.Ordinal)).Select(k => k["input_ids_".Length..]).ToList();
        Assert.NotEmpty(batches);
        foreach (string batch in batches)
        {
            Tensor ids = expected["input_ids_" + batch];
            Tensor mask = expected["attention_mask_" + batch];
            Tensor realPositions = mask.to(ScalarType.Float32).unsqueeze(-1);
            foreach (var (mode, key) in new[] { (AttentionMode.Causal, "causal"), (AttentionMode.Bidirectional, "bidirectional") })
            {
                Tensor hidden = model.Forward(ids, mask, mode);           // default positions: cumsum(mask) - 1
                Tensor logits = model.LanguageModelLogits(hidden);
                double hiddenErr = MaxAbsDiff(hidden * realPositions, expected[$"hidden_{key}_{batch}"]);
                double logitErr = MaxAbsDiff(logits * realPositions, expected[$"logits_{key}_{batch}"]);
                output.WriteLine($"{name} {batch} {key}: max abs error hidden {hiddenErr:E2}, logits {logitErr:E2}");
                Assert.True(hiddenErr < Tolerance, $"{name}/{batch}/{key}: hidden differs by {hiddenErr}");
                Assert.True(logitErr < Tolerance, $"{name}/{batch}/{key}: logits differ by {logitErr}");
            }
        }
        foreach (var t in expected.Values) t.Dispose();
    }

    /// <summary>The checkpoint keys HF's *ForCausalLM has for each fixture config, written out per layer.</summary>
    private static readonly Dictionary<string, (string[] TopLevel, string[] PerLayer, int Layers)> HfKeys = new()
    {
        ["llama"] = (["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"],
        [
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
        ], 2),
        // attention_bias and mlp_bias: every projection has a bias; tied embeddings: no lm_head.
        ["llama_linear"] = (["model.embed_tokens.weight", "model.norm.weight"],
        [
            "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
            "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight", "self_attn.o_proj.bias",
            "mlp.gate_proj.weight", "mlp.gate_proj.bias", "mlp.up_proj.weight", "mlp.up_proj.bias",
            "mlp.down_proj.weight", "mlp.down_proj.bias",
            "input_layernorm.weight", "post_attention_layernorm.weight",
        ], 2),
        ["mistral"] = (["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"],
        [
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
        ], 2),
        // q/k/v biases, none on o_proj.
        ["qwen2"] = (["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"],
        [
            "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
            "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
        ], 3),
        // fused projections.
        ["phi3"] = (["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"],
        [
            "self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
        ], 2),
        // sandwich norms; tied embeddings.
        ["gemma2"] = (["model.embed_tokens.weight", "model.norm.weight"],
        [
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
            "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight",
        ], 3),
    };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ParameterNamesAreHuggingFaceCheckpointKeys(string name)
    {
        var (topLevel, perLayer, layers) = HfKeys[name];
        var expected = topLevel
            .Concat(Enumerable.Range(0, layers).SelectMany(i => perLayer.Select(k => $"model.layers.{i}.{k}")))
            .Order(StringComparer.Ordinal).ToArray();
        using var model = DecoderModel.Create(FixtureConfig(name));
        var actual = model.named_parameters().Select(p => p.name).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(expected, actual);
        // Nothing else is saved either: rotary tables are not buffers.
        Assert.Equal(expected, model.state_dict().Keys.Order(StringComparer.Ordinal).ToArray());

        // The reference's checkpoint holds exactly these keys, plus (llama) an old-style rotary buffer that loading skips.
        var extra = FixtureCheckpointKeys(name).Except(expected).ToArray();
        Assert.All(extra, k => Assert.True(model.IsIgnorableCheckpointKey(k), k));
        Assert.Equal(name == "llama" ? ["model.layers.0.self_attn.rotary_emb.inv_freq"] : [], extra);
    }

    [Fact]
    public void TiedEmbeddingsMakeLmHeadKeyIgnorableAndReuseTheEmbedding()
    {
        using var tied = DecoderModel.Create(FixtureConfig("gemma2"));
        using var untied = DecoderModel.Create(FixtureConfig("llama"));
        Assert.Null(tied.lm_head);
        Assert.True(tied.IsIgnorableCheckpointKey("lm_head.weight"));
        Assert.False(untied.IsIgnorableCheckpointKey("lm_head.weight"));
        Assert.False(untied.IsIgnorableCheckpointKey("model.norm.weight"));

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // Tied: logits = state · embed_tokens.weightᵀ, then Gemma2's final soft-cap.
        Tensor state = randn(2, tied.HiddenSize);
        Tensor expected = state.matmul(tied.model.embed_tokens.weight.t());
        double cap = tied.Traits.FinalLogitSoftcap!.Value;
        Assert.True(MaxAbsDiff(tied.LanguageModelLogits(state), (expected / cap).tanh() * cap) < 1e-5);
    }
}
