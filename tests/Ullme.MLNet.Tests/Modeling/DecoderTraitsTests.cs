using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>
/// <see cref="ArchitectureTraits"/> read from config.json shapes of real checkpoints: the per-architecture switches
/// and HF's config-class defaults for fields a file leaves out.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class DecoderTraitsTests
{
    private static ArchitectureTraits Traits(string json) => ArchitectureTraits.From(ModelConfig.Parse(json));

    private const string Common = "\"vocab_size\": 1000, \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"max_position_embeddings\": 4096";

    [Fact]
    public void Gemma2DefaultsFollowGemma2Config()
    {
        // A config that leaves out everything Gemma2Config defaults.
        var t = Traits($"{{\"model_type\": \"gemma2\", {Common}, \"num_key_value_heads\": 2}}");
        Assert.Equal(256, t.HeadDim);                                    // not hidden / heads
        Assert.Equal(Math.Pow(256, -0.5), t.AttentionScale, 12);          // query_pre_attn_scalar 256
        Assert.Equal(50.0, t.AttentionLogitSoftcap);
        Assert.Equal(30.0, t.FinalLogitSoftcap);
        Assert.Equal(4096, t.SlidingWindow);
        Assert.Equal([true, false, true, false], t.SlidingLayers);         // even layers slide
        Assert.Equal(MlpActivation.GeluTanh, t.Activation);
        Assert.Equal(RmsNormStyle.OnePlusWeight, t.NormStyle);
        Assert.Equal(Math.Sqrt(64), t.EmbeddingScale);
        Assert.True(t.SandwichNorms);
        Assert.True(t.TieWordEmbeddings);
        Assert.Equal(1e-6, t.RmsNormEps);

        // Explicit nulls switch the soft-caps off (the attention then takes the SDPA path).
        var uncapped = Traits($"{{\"model_type\": \"gemma2\", {Common}, \"head_dim\": 16, \"query_pre_attn_scalar\": 16, \"attn_logit_softcapping\": null, \"final_logit_softcapping\": null}}");
        Assert.Null(uncapped.AttentionLogitSoftcap);
        Assert.Null(uncapped.FinalLogitSoftcap);
        Assert.Equal(0.25, uncapped.AttentionScale, 12);
    }

    [Fact]
    public void Qwen2SlidesOnlyWithUseSlidingWindowFromMaxWindowLayers()
    {
        // Qwen2.5-style: a window is configured but use_sliding_window is false.
        var off = Traits($"{{\"model_type\": \"qwen2\", {Common}, \"num_key_value_heads\": 2, \"use_sliding_window\": false, \"sliding_window\": 32768, \"max_window_layers\": 2}}");
        Assert.False(off.HasSlidingLayers);
        Assert.Null(off.SlidingWindow);
        Assert.True(off.QkvBias);
        Assert.False(off.OutputBias);
        Assert.False(off.MlpBias);

        var on = Traits($"{{\"model_type\": \"qwen2\", {Common}, \"use_sliding_window\": true, \"sliding_window\": 128, \"max_window_layers\": 2}}");
        Assert.Equal(128, on.SlidingWindow);
        Assert.Equal([false, false, true, true], on.SlidingLayers);

        var listed = Traits($"{{\"model_type\": \"qwen2\", {Common}, \"use_sliding_window\": true, \"sliding_window\": 128, \"layer_types\": [\"sliding_attention\", \"full_attention\", \"full_attention\", \"sliding_attention\"]}}");
        Assert.Equal([true, false, false, true], listed.SlidingLayers);
    }

    [Fact]
    public void MistralWindowDefaultsTo4096OnEveryLayerAndNullDisablesIt()
    {
        var absent = Traits($"{{\"model_type\": \"mistral\", {Common}}}");
        Assert.Equal(4096, absent.SlidingWindow);
        Assert.All(absent.SlidingLayers, Assert.True);
        var none = Traits($"{{\"model_type\": \"mistral\", {Common}, \"sliding_window\": null}}");
        Assert.False(none.HasSlidingLayers);
        Assert.False(none.QkvBias || none.OutputBias || none.MlpBias);
        Assert.False(none.TieWordEmbeddings);
    }

    [Fact]
    public void Phi3LongRopeUsesContextRatioForAttentionFactor()
    {
        // Phi-3-mini-128k shape: head_dim 96 → 48 factors; 131072 / 4096 = 32× context extension.
        string factors = string.Join(", ", Enumerable.Repeat("1.0", 48));
        var t = Traits($$$"""
            {"model_type": "phi3", "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 2,
             "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 131072,
             "original_max_position_embeddings": 4096, "sliding_window": 262144,
             "rope_scaling": {"type": "su", "short_factor": [{{{factors}}}], "long_factor": [{{{factors}}}]}}
            """);
        Assert.True(t.FusedQkv && t.FusedGateUp);
        Assert.Equal("longrope", t.Rope.Kind);
        Assert.Equal(4096, t.Rope.OriginalMaxPositionEmbeddings);
        Assert.Equal(Math.Sqrt(1 + Math.Log(32) / Math.Log(4096)), t.Rope.AttentionScaling, 12);
        Assert.Equal(1e-5, t.RmsNormEps);
        Assert.All(t.SlidingLayers, Assert.True);

        // Phi-4-mini shape: a quarter of each head is not rotated.
        var partial = Traits($"{{\"model_type\": \"phi3\", {Common}, \"num_attention_heads\": 2, \"partial_rotary_factor\": 0.75}}");
        Assert.Equal(24, partial.Rope.RotaryDim);
        Assert.Equal(32, partial.HeadDim);
        Assert.False(partial.HasSlidingLayers);
    }

    [Fact]
    public void WrongLongRopeFactorCountIsRejected()
    {
        var ex = Assert.Throws<UllmeException>(() => Traits($$$"""{"model_type": "phi3", {{{Common}}}, "rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}"""));
        Assert.Contains("short_factor", ex.Message);
    }

    [Fact]
    public void Llama3InverseFrequenciesFollowTheThreeBands()
    {
        // Llama-3.1-8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original context 8192.
        var config = ModelConfig.Parse("""
            {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 1,
             "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
            """);
        using var rope = new RotaryEmbedding(ArchitectureTraits.From(config).Rope);
        using var invFreq = rope.InverseFrequencies();
        float[] actual = invFreq.data<float>().ToArray();
        Assert.Equal(64, actual.Length);
        int kept = 0, divided = 0, blended = 0;
        for (int i = 0; i < 64; i++)
        {
            double f = 1.0 / Math.Pow(500000.0, 2.0 * i / 128);
            double wavelength = 2 * Math.PI / f;
            double expected;
            if (wavelength < 8192 / 4.0) { expected = f; kept++; }
            else if (wavelength > 8192 / 1.0) { expected = f / 8; divided++; }
            else
            {
                double smooth = (8192 / wavelength - 1) / (4 - 1);
                expected = (1 - smooth) * f / 8 + smooth * f;
                blended++;
            }
            Assert.True(Math.Abs(actual[i] - expected) <= 1e-6 * expected, $"inv_freq[{i}] = {actual[i]}, expected {expected}");
        }
        Assert.True(kept > 0 && divided > 0 && blended > 0);
    }

    [Fact]
    public void NonDecoderModelTypesAndUnknownActivationsAreRejected()
    {
        var bert = ModelConfig.Parse($"{{\"model_type\": \"bert\", {Common}}}");
        var ex = Assert.Throws<UllmeException>(() => DecoderModel.Create(bert));
        Assert.Contains("bert", ex.Message);
        ex = Assert.Throws<UllmeException>(() => Traits($"{{\"model_type\": \"llama\", {Common}, \"hidden_act\": \"mish\"}}"));
        Assert.Contains("mish", ex.Message);
    }

    [Fact]
    public void CreateInitialisesWeightsLikeHuggingFace()
    {
        var config = ModelConfig.Parse($"{{\"model_type\": \"llama\", {Common}, \"num_key_value_heads\": 2, \"initializer_range\": 0.05, \"attention_bias\": true, \"pad_token_id\": 0}}");
        using var model = DecoderModel.Create(config);
        using var scope = NewDisposeScope();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) Assert.True(p.eq(1).all().item<bool>(), name);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) Assert.True(p.eq(0).all().item<bool>(), name);
            else Assert.InRange(p.std().item<float>(), 0.045f, 0.055f);
        }
        Assert.True(model.model.embed_tokens.weight[0].eq(0).all().item<bool>(), "the pad row is zero");
    }
}
