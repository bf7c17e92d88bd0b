using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Graph;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Onnx.Export;

/// <summary>What an exported graph computes, as recorded in its metadata and ullme.json.</summary>
internal sealed record OnnxGraphSettings(AttentionMode Attention, PoolingMode Pooling, bool Normalize, bool PoolingMaskInput,
    OnnxQuantization Quantize, int Opset, int HiddenSize);

/// <summary>Builds the graph of a TorchSharp backbone: inputs, encoder or decoder, pooling, outputs.</summary>
internal static class OnnxGraphExport
{
    public const string InputIds = "input_ids", AttentionMask = "attention_mask", PoolingMask = "pooling_mask";
    public const string SentenceEmbedding = "sentence_embedding", TokenEmbeddings = "token_embeddings";

    /// <summary>The settings an export with <paramref name="options"/> produces for a model with these defaults.</summary>
    public static OnnxGraphSettings Resolve(EmbeddingBackbone backbone, EmbeddingDefaults defaults, OnnxExportOptions options)
    {
        options.Validate();
        var attention = options.Attention ?? defaults.Attention;
        if (backbone is BertEncoder && attention == AttentionMode.Causal)
            throw new UllmeException("OnnxExportOptions.Attention cannot be causal: the model is a bidirectional BERT encoder.");
        if (backbone is not (BertEncoder or DecoderModel))
            throw new UllmeException($"ONNX export needs a model on the Torch backend (this one runs on {backbone.GetType().Name}); load the model folder with Backend = Torch and export that.");
        return new OnnxGraphSettings(attention, options.Pooling ?? defaults.Pooling, options.Normalize ?? defaults.Normalize,
            options.PoolingMaskInput, options.Quantize, options.Opset, backbone.HiddenSize);
    }

    /// <summary>Float32 bytes of the weights the graph will carry (an upper bound for the quantized forms).</summary>
    public static long EstimateBytes(EmbeddingBackbone backbone) =>
        backbone.parameters().Sum(p => p.numel()) * 4L;

    /// <summary>
    /// Emits the whole graph into <paramref name="g"/>: inputs input_ids, attention_mask (and pooling_mask), both
    /// [batch, sequence] int64; outputs sentence_embedding [batch, hidden] and token_embeddings [batch, sequence, hidden].
    /// </summary>
    public static int Emit(OnnxGraphBuilder g, EmbeddingBackbone backbone, ModelConfig config, OnnxGraphSettings s, int int4BlockSize)
    {
        using var noGrad = no_grad();
        var weights = backbone.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var w = new LinearEmitter(g, weights, s.Quantize, int4BlockSize);

        g.Input(InputIds, OnnxType.Int64, "batch", "sequence");
        g.Input(AttentionMask, OnnxType.Int64, "batch", "sequence");
        if (s.PoolingMaskInput) g.Input(PoolingMask, OnnxType.Int64, "batch", "sequence");

        string maskBool = g.Cast(AttentionMask, OnnxType.Bool);
        string maskFloat = g.Cast(AttentionMask, OnnxType.Float);
        string poolFloat = s.PoolingMaskInput ? g.Cast(PoolingMask, OnnxType.Float) : maskFloat;

        string hidden = backbone switch
        {
            BertEncoder bert => BertGraph.Emit(g, w, bert.Config, InputIds, maskBool, maskFloat),
            DecoderModel decoder => DecoderGraph.Emit(g, w, decoder, s.Attention, InputIds, maskBool),
            _ => throw new UllmeException($"ONNX export does not know {backbone.GetType().Name}."),
        };
        string pooled = PoolingGraph.Emit(g, hidden, maskFloat, poolFloat, s.Pooling, s.Normalize);
        g.NodeN("Identity", [hidden], 1, outputs: [TokenEmbeddings]);
        g.NodeN("Identity", [pooled], 1, outputs: [SentenceEmbedding]);
        g.Output(SentenceEmbedding, OnnxType.Float, "batch", s.HiddenSize);
        g.Output(TokenEmbeddings, OnnxType.Float, "batch", "sequence", s.HiddenSize);
        return w.LinearCount;
    }

    /// <summary>The metadata_props of the model file (what ORT's ModelMetadata.CustomMetadataMap shows).</summary>
    public static Dictionary<string, string> Metadata(OnnxGraphSettings s, string modelId) => new(StringComparer.Ordinal)
    {
        ["ullme.model"] = modelId,
        ["ullme.attention"] = OptionNames.Attention.ToName(s.Attention),
        ["ullme.pooling"] = Pooler.ToName(s.Pooling),
        ["ullme.normalize"] = s.Normalize ? "true" : "false",
        ["ullme.pooling_mask_input"] = s.PoolingMaskInput ? "true" : "false",
        ["ullme.quantize"] = OnnxNames.Quantize.ToName(s.Quantize),
    };

    /// <summary>The graph as bytes (models whose weights fit in one protobuf message, under 2 GB).</summary>
    public static byte[] ToBytes(EmbeddingBackbone backbone, ModelConfig config, OnnxGraphSettings s, string modelId, int int4BlockSize = 32)
    {
        if (EstimateBytes(backbone) > int.MaxValue - (64 << 20) && s.Quantize == OnnxQuantization.None)
            throw new UllmeException("The model's float32 weights exceed 2 GB, more than one ONNX file holds; export it to a folder (external data) instead.");
        using var g = new OnnxGraphBuilder(s.Opset);
        Emit(g, backbone, config, s, int4BlockSize);
        return g.Save(null, Metadata(s, modelId), ProducerVersion)!;
    }

    public static string ProducerVersion => typeof(OnnxGraphExport).Assembly.GetName().Version?.ToString() ?? "0";
}
