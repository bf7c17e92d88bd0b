using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>Creates the backbone module for a config: the one decoder for decoder architectures, the BERT encoder
/// for <c>bert</c>.</summary>
internal static class BackboneFactory
{
    /// <summary>
    /// A backbone whose weights a checkpoint is about to overwrite: decoders are created directly in the target
    /// dtype and device without drawing random initial weights (a 7B model would otherwise need its float32 size
    /// in memory and minutes of random-number generation before loading).
    /// </summary>
    public static EmbeddingBackbone CreateForLoading(ModelConfig config, ScalarType dtype, Device device) =>
        config.IsEncoder ? BertEncoder.Create(config) : DecoderModel.Create(config, dtype, device, initializeWeights: false);

    /// <summary>A freshly initialised backbone (HF's initialisation), float32 on the CPU.</summary>
    public static EmbeddingBackbone Create(ModelConfig config) =>
        config.IsEncoder ? BertEncoder.Create(config) : DecoderModel.Create(config);
}
