using System.Text.Json.Nodes;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// A decoder with Qwen2-0.5B's shape (hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864, vocab 151,936,
/// tied embeddings) and random weights (HF initialisation), built in memory — nothing is downloaded or written.
/// </summary>
public static class QwenShape
{
    public const int Hidden = 896, Heads = 14, KvHeads = 2, Intermediate = 4864, Vocab = 151936, FullLayers = 24;

    public static ModelConfig Config(int layers)
    {
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"), ["model_type"] = "qwen2", ["hidden_act"] = "silu",
            ["hidden_size"] = Hidden, ["intermediate_size"] = Intermediate, ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = Heads, ["num_key_value_heads"] = KvHeads, ["max_position_embeddings"] = 32768,
            ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 1000000.0, ["tie_word_embeddings"] = true, ["vocab_size"] = Vocab,
            ["bos_token_id"] = 151643, ["eos_token_id"] = 151643, ["use_sliding_window"] = false, ["initializer_range"] = 0.02,
            ["torch_dtype"] = "float32",
        };
        return ModelConfig.Parse(json.ToJsonString());
    }

    internal static DecoderModel Create(int layers, ScalarType dtype)
    {
        manual_seed(0);
        var model = DecoderModel.Create(Config(layers), dtype);
        model.eval();
        return model;
    }

    /// <summary>Non-embedding parameters of one layer (q, k, v with bias, o, gate, up, down, two norms).</summary>
    public static double LayerParameters =>
        (double)Hidden * (Hidden + 2 * 128) + Hidden + 2 * 128 + (double)Hidden * Hidden + 3.0 * Hidden * Intermediate + 2 * Hidden;

    /// <summary>Forward FLOPs of [batch, seq] through <paramref name="layers"/> layers with full (bidirectional)
    /// attention: 2 per multiply-add in every projection, plus QKᵀ and PV (4·T·896 per token per layer). No LM head.</summary>
    public static double ForwardFlops(long batch, long seq, int layers)
    {
        double perTokenPerLayer = 2.0 * Hidden * (Hidden + 2 * 128) + 2.0 * Hidden * Hidden + 2.0 * 3 * Hidden * Intermediate + 4.0 * seq * Hidden;
        return perTokenPerLayer * batch * seq * layers;
    }
}
