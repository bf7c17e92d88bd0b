using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Onnx;

/// <summary>How the linear layers of an exported graph store their weights.</summary>
public enum OnnxQuantization
{
    /// <summary>float32 weights, float32 matmuls.</summary>
    None,

    /// <summary>Dynamic int8: every linear layer's weight quantized per output channel (symmetric int8, one scale
    /// per column), activations quantized per batch at run time (ONNX Runtime's <c>DynamicQuantizeMatMul</c>).
    /// Embeddings, norms, softmax and pooling stay float32.</summary>
    Int8,

    /// <summary>Weight-only int4 in blocks along the input dimension (ONNX Runtime's <c>MatMulNBits</c>), the
    /// usual choice for decoders; embeddings, norms, softmax and pooling stay float32.</summary>
    Int4,
}

/// <summary>The spellings of <see cref="OnnxQuantization"/> (CLI flags, ullme.json, the model's metadata).</summary>
internal static class OnnxNames
{
    public static readonly EnumNames<OnnxQuantization> Quantize = new("quantization",
        (OnnxQuantization.None, "none", ["float32", "fp32"]),
        (OnnxQuantization.Int8, "int8", ["q8"]),
        (OnnxQuantization.Int4, "int4", ["q4"]));
}

/// <summary>What <see cref="UllmeOnnx.Export"/> bakes into the graph. Unset values come from the model's defaults
/// (its ullme.json / sentence-transformers files).</summary>
public sealed record OnnxExportOptions
{
    /// <summary>Attention mode of the exported graph (decoders; BERT is always bidirectional). Null = the model's default.</summary>
    public AttentionMode? Attention { get; init; }

    /// <summary>Pooling of <c>sentence_embedding</c>. Null = the model's default.</summary>
    public PoolingMode? Pooling { get; init; }

    /// <summary>Whether <c>sentence_embedding</c> is L2-normalised. Null = the model's default.</summary>
    public bool? Normalize { get; init; }

    /// <summary>Weight format of the linear layers. Default float32.</summary>
    public OnnxQuantization Quantize { get; init; } = OnnxQuantization.None;

    /// <summary>ONNX opset of the default domain: 17 (default; LayerNormalization) to 21.</summary>
    public int Opset { get; init; } = 17;

    /// <summary>True (default): the graph takes a third input, <c>pooling_mask</c> ([batch, sequence], 1 = pool this
    /// token), so an instruction prefix steers the embedding without being averaged into it. False: the graph pools
    /// over <c>attention_mask</c> and takes only <c>input_ids</c> and <c>attention_mask</c> (the sentence-transformers
    /// ONNX interface).</summary>
    public bool PoolingMaskInput { get; init; } = true;

    /// <summary>int4: weights per quantization block along the input dimension (16, 32, 64, 128 or 256). Default 32.</summary>
    public int Int4BlockSize { get; init; } = 32;

    /// <summary>Weights above this many bytes go to <c>model.onnx.data</c> beside the graph (protobuf cannot hold
    /// 2 GB in one message). Default 2,000,000,000.</summary>
    public long ExternalDataThreshold { get; init; } = 2_000_000_000;

    /// <summary>Checks every setting; the message names the option and its value.</summary>
    public void Validate()
    {
        if (Opset is < 17 or > 21)
            throw new UllmeException($"OnnxExportOptions.Opset must be between 17 and 21 (got {Opset}).");
        if (!Enum.IsDefined(Quantize))
            throw new UllmeException($"OnnxExportOptions.Quantize: unknown value {(int)Quantize}.");
        if (Int4BlockSize is not (16 or 32 or 64 or 128 or 256))
            throw new UllmeException($"OnnxExportOptions.Int4BlockSize must be 16, 32, 64, 128 or 256 (got {Int4BlockSize}).");
        if (ExternalDataThreshold < 0)
            throw new UllmeException($"OnnxExportOptions.ExternalDataThreshold must not be negative (got {ExternalDataThreshold}).");
    }
}
