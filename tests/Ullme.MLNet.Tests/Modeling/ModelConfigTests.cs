using System.Text.Json.Nodes;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Modeling;

public sealed class ModelConfigTests
{
    /// <summary>A minimal valid Llama config; <paramref name="extra"/> is spliced in as more JSON members.</summary>
    private static string Llama(string extra = "") =>
        """{"model_type":"llama","vocab_size":100,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4""" +
        (extra.Length > 0 ? "," + extra : "") + "}";

    [AssetFact]
    public void Stories260K_LoadsWithEveryField()
    {
        var c = ModelConfig.Load(Assets.Stories260K); // folder form
        Assert.Equal("llama", c.ModelType);
        Assert.Equal(["LlamaForCausalLM"], c.Architectures!);
        Assert.Equal(512, c.VocabSize);
        Assert.Equal(64, c.HiddenSize);
        Assert.Equal(172, c.IntermediateSize);
        Assert.Equal(5, c.NumHiddenLayers);
        Assert.Equal(8, c.NumAttentionHeads);
        Assert.Equal(4, c.EffectiveKeyValueHeads);
        Assert.Equal(8, c.EffectiveHeadDim);
        Assert.Equal(512, c.MaxPositionEmbeddings);
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Null(c.RopeScaling);
        Assert.Equal("silu", c.HiddenAct);
        Assert.True(c.TieWordEmbeddings);
        Assert.False(c.AttentionBias);
        Assert.False(c.MlpBias);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal([2], c.EosTokenIds);
        Assert.Null(c.PadTokenId);
        Assert.Equal("float32", c.TorchDtype);
        Assert.False(c.IsEncoder);
        Assert.Equal(Path.Combine(Assets.Stories260K, "config.json"), c.SourcePath);
        // Untyped fields are kept in Raw.
        Assert.Equal(0.02, c.Raw["initializer_range"]!.GetValue<double>());

        var sameFromFile = ModelConfig.Load(Path.Combine(Assets.Stories260K, "config.json"));
        Assert.Equal(c.ToJson(), sameFromFile.ToJson());
    }

    [Fact]
    public void EosTokenId_AsIntOrList()
    {
        Assert.Equal([7], ModelConfig.Parse(Llama("\"eos_token_id\": 7")).EosTokenIds);
        var list = ModelConfig.Parse(Llama("\"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": 128000, \"pad_token_id\": null"));
        Assert.Equal([128001, 128008, 128009], list.EosTokenIds);
        Assert.Equal(128000, list.BosTokenId);
        Assert.Null(list.PadTokenId);
        Assert.Empty(ModelConfig.Parse(Llama()).EosTokenIds);
    }

    [Theory]
    [InlineData("\"eos_token_id\": \"two\"", "eos_token_id")]
    [InlineData("\"eos_token_id\": [2, \"x\"]", "eos_token_id")]
    [InlineData("\"bos_token_id\": 1.5", "bos_token_id")]
    [InlineData("\"pad_token_id\": {}", "pad_token_id")]
    public void TokenIds_OfTheWrongKind_AreRejectedAtParse(string member, string field)
    {
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Parse(Llama(member), "/m/config.json"));
        Assert.Contains(field, e.Message);
        Assert.Contains("/m/config.json", e.Message);
    }

    [Fact]
    public void MissingModelType_IsAnError()
    {
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Parse("""{"vocab_size": 10}""", "/x/config.json"));
        Assert.Contains("/x/config.json", e.Message);
        Assert.Contains("model_type", e.Message);
        Assert.Contains("llama", e.Message); // lists the supported ones
    }

    [Fact]
    public void UnknownModelType_IsAnErrorNamingIt()
    {
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Parse(Llama().Replace("\"llama\"", "\"mamba\""), "/x/config.json"));
        Assert.Contains("\"mamba\"", e.Message);
        Assert.Contains("/x/config.json", e.Message);
        Assert.Contains("qwen2", e.Message);
    }

    [Theory]
    [InlineData("not json at all", "not valid")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("""{"model_type": "llama", "hidden_size": "wide"}""", "field \"hidden_size\" is \"wide\", but it must be a 32-bit integer")]
    [InlineData("""{"model_type":"llama","vocab_size":100,"hidden_size":30,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4}""", "not divisible")]
    [InlineData("""{"model_type":"llama","vocab_size":100,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3}""", "multiple")]
    [InlineData("""{"model_type":"llama","vocab_size":100,"hidden_size":32,"intermediate_size":64,"num_attention_heads":4}""", "num_hidden_layers")]
    public void InvalidConfigs_GiveOneClearError(string json, string phrase)
    {
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Parse(json, "/cfg/config.json"));
        Assert.Contains("/cfg/config.json", e.Message);
        Assert.Contains(phrase, e.Message);
    }

    [Fact]
    public void MissingFile_IsAnError()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ullme-no-such-model-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Load(dir));
        Assert.Contains("config.json", e.Message);
    }

    [Theory]
    [InlineData("""{"type": "yarn", "factor": 4.0}""", "\"yarn\"")]
    [InlineData("""{"rope_type": "ntk-by-parts"}""", "\"ntk-by-parts\"")]
    [InlineData("""{"rope_type": "llama3", "factor": 8.0}""", "low_freq_factor")]
    [InlineData("""{"type": "linear"}""", "factor")]
    [InlineData("""{"type": "longrope", "short_factor": [1.0]}""", "long_factor")]
    public void UnsupportedOrIncompleteRopeScaling_IsAnError(string scaling, string phrase)
    {
        var e = Assert.Throws<UllmeException>(() => ModelConfig.Parse(Llama("\"rope_scaling\": " + scaling), "/r/config.json"));
        Assert.Contains("rope_scaling", e.Message);
        Assert.Contains(phrase, e.Message);
        Assert.Contains("/r/config.json", e.Message);
    }

    [Fact]
    public void Llama3RopeScaling_FieldsAreRead()
    {
        var c = ModelConfig.Parse(Llama("""
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
            """));
        var r = c.RopeScaling!;
        Assert.Equal("llama3", r.Kind);
        Assert.Equal(8.0, r.Factor);
        Assert.Equal(4.0, r.HighFreqFactor);
        Assert.Equal(1.0, r.LowFreqFactor);
        Assert.Equal(8192, r.OriginalMaxPositionEmbeddings);
    }

    [Fact]
    public void OldStyleTypeField_NamesTheKind()
    {
        var c = ModelConfig.Parse(Llama("""
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [2.0, 3.0]},
            "original_max_position_embeddings": 4096
            """));
        Assert.Equal("longrope", c.RopeScaling!.Kind);
        Assert.Equal([2.0, 3.0], c.RopeScaling.LongFactor!);
        Assert.Equal(4096, c.OriginalMaxPositionEmbeddings);
    }

    [Fact]
    public void ToJson_RoundTrip_PreservesUnknownFieldsAndTypedValues()
    {
        string json = Llama("""
            "eos_token_id": [5, 6], "rms_norm_eps": 1e-06, "rope_theta": 500000.0,
            "custom_field": {"nested": [1, 2, {"deep": true}]}, "use_cache": false, "quantization": null,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192, "unknown_inner": "kept"}
            """);
        var c = ModelConfig.Parse(json);
        var back = JsonNode.Parse(c.ToJson())!.AsObject();

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"nested": [1, 2, {"deep": true}]}"""), back["custom_field"]));
        Assert.False(back["use_cache"]!.GetValue<bool>());
        Assert.True(back.ContainsKey("quantization"));
        Assert.Null(back["quantization"]);

        // rope_scaling keeps its unknown member and does not gain null-valued ones (HF reads "rope_type": null as no type).
        var rope = back["rope_scaling"]!.AsObject();
        Assert.Equal("kept", rope["unknown_inner"]!.GetValue<string>());
        Assert.Equal("llama3", rope["rope_type"]!.GetValue<string>());
        Assert.False(rope.ContainsKey("type"));
        Assert.False(rope.ContainsKey("short_factor"));

        // No typed field absent from the input is invented (e.g. max_position_embeddings: 0, head_dim: null).
        Assert.False(back.ContainsKey("max_position_embeddings"));
        Assert.False(back.ContainsKey("head_dim"));

        var again = ModelConfig.Parse(c.ToJson());
        Assert.Equal([5, 6], again.EosTokenIds);
        Assert.Equal(1e-6, again.RmsNormEps);
        Assert.Equal(500000.0, again.RopeTheta);
        Assert.Equal(8192, again.RopeScaling!.OriginalMaxPositionEmbeddings);
        Assert.Equal(c.ToJson(), again.ToJson());
    }

    [Fact]
    public void ToJson_WritesChangedTypedValues()
    {
        var c = ModelConfig.Parse(Llama("\"torch_dtype\": \"float32\""));
        c.TorchDtype = "bfloat16";
        c.MaxPositionEmbeddings = 2048;
        c.RopeScaling = new RopeScalingConfig { Type = "linear", Factor = 2.0 };
        var back = JsonNode.Parse(c.ToJson())!.AsObject();
        Assert.Equal("bfloat16", back["torch_dtype"]!.GetValue<string>());
        Assert.Equal(2048, back["max_position_embeddings"]!.GetValue<int>());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"type": "linear", "factor": 2.0}"""), back["rope_scaling"]));
    }

    [Fact]
    public void BertConfig_IsAnEncoder()
    {
        var c = ModelConfig.Parse("""
            {"model_type":"bert","vocab_size":30522,"hidden_size":384,"intermediate_size":1536,"num_hidden_layers":6,
             "num_attention_heads":12,"max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12,
             "hidden_act":"gelu","position_embedding_type":"absolute","pad_token_id":0}
            """);
        Assert.True(c.IsEncoder);
        Assert.Equal(32, c.EffectiveHeadDim);
        Assert.Equal(12, c.EffectiveKeyValueHeads);
        Assert.Equal(2, c.TypeVocabSize);
        Assert.Equal(1e-12, c.LayerNormEps);
        Assert.Equal(0, c.PadTokenId);
    }
}
