using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Inference;

/// <summary>How texts become embeddings. Null members take the model's defaults (see <see cref="UllmeModel.Defaults"/>).</summary>
public sealed record EmbeddingOptions
{
    /// <summary>Pooling; default: the model's (mean for encoders and sentence-transformers folders, mean for decoders).</summary>
    public PoolingMode? Pooling { get; init; }

    /// <summary>Attention; default bidirectional (encoders are always bidirectional).</summary>
    public AttentionMode? Attention { get; init; }

    /// <summary>Text placed before every input whose tokens are attended to but excluded from pooling.</summary>
    public string? Instruction { get; init; }

    /// <summary>Maximum tokens per text including special tokens; default: the model's (sentence-transformers
    /// max_seq_length, else max_position_embeddings). Longer texts are truncated and counted.</summary>
    public int? MaxLength { get; init; }

    /// <summary>Texts per forward pass, 1 to <see cref="MaxBatchSize"/>. Default 32.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>The largest <see cref="BatchSize"/> accepted (a batch's token ids, masks and activations are allocated
    /// whole; beyond this the product batch × length × hidden overflows what one tensor can index on common models).</summary>
    public const int MaxBatchSize = 65_536;

    /// <summary>The smallest <see cref="MaxLength"/> accepted: room for one token besides a special token.</summary>
    public const int MinMaxLength = 2;

    /// <summary>
    /// Texts sorted together by length before batching (bounded window): batches then hold texts of similar length,
    /// so little compute goes to padding, while memory for token ids stays bounded (and, with
    /// <see cref="OverlapTokenization"/>, the next window is tokenized while the current one runs through the model). Default: 8 × <see cref="BatchSize"/>; 0 sorts the whole input
    /// at once (least padding, no overlap).
    /// </summary>
    public int? SortWindow { get; init; }

    /// <summary>
    /// Tokenize the next window on a worker thread while the model runs on the current one. Default false:
    /// tokenization is under 1% of an embedding job with our tokenizers, so the measured gain is within noise, and
    /// with TorchSharp 0.107 another thread's allocations during a forward can let the GC finalize a temporary
    /// <c>Scalar</c> that libtorch is still reading (docs/training.md, "TorchSharp Scalar lifetime"). Worth turning on when
    /// tokenization is a real share of the time (e.g. a fast GPU forward).
    /// </summary>
    public bool OverlapTokenization { get; init; }

    /// <summary>L2-normalise the result. Default true.</summary>
    public bool Normalize { get; init; } = true;

    /// <summary>Keep only the first N dimensions of each embedding (Matryoshka truncation), then L2-normalise them
    /// when <see cref="Normalize"/> is set; 1 to the model's embedding dimension. Null (default) = all of them.</summary>
    public int? Dimensions { get; init; }

    /// <summary>Checks every setting that does not depend on the model (the model's limits are checked when the
    /// engine resolves the options).</summary>
    /// <exception cref="UllmeException">A setting is invalid; the message names it and its value.</exception>
    public void Validate()
    {
        OptionCheck.Defined(Pooling, "EmbeddingOptions.Pooling");
        OptionCheck.Defined(Attention, "EmbeddingOptions.Attention");
        OptionCheck.AtLeast(MaxLength, MinMaxLength, "EmbeddingOptions.MaxLength", " tokens");
        OptionCheck.Range(BatchSize, 1, MaxBatchSize, "EmbeddingOptions.BatchSize");
        OptionCheck.AtLeast(Dimensions, 1, "EmbeddingOptions.Dimensions", " dimensions");
        if (SortWindow is < 0)
            throw OptionCheck.Error("EmbeddingOptions.SortWindow", $"must be 0 (the whole input) or a positive sort window (got {SortWindow})");
    }
}
