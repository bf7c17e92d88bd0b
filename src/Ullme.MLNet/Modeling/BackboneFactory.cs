namespace Ullme.MLNet.Modeling;

/// <summary>Creates the backbone module for a config: the one decoder for decoder architectures, the BERT encoder
/// for <c>bert</c>. Weights are random until a checkpoint is loaded.</summary>
public static class BackboneFactory
{
    public static EmbeddingBackbone Create(ModelConfig config) =>
        config.IsEncoder ? BertEncoder.Create(config) : DecoderModel.Create(config);
}
