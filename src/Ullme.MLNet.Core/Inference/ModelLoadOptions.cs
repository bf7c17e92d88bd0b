using Microsoft.Extensions.Logging;
using Ullme.MLNet.Hub;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Inference;

/// <summary>How to load a model: precision and device.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Precision of weights and matmuls. Default float32.</summary>
    public ModelDType DType { get; init; } = ModelDType.Float32;

    /// <summary>"cpu", "cuda" or "cuda:N". Default "cpu".</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>CPU threads for the compute engine; null = leave libtorch's setting (one per core by default).
    /// Process-wide: applied through <see cref="UllmeRuntime.SetThreads"/> when the model loads. One thread is often
    /// faster on a shared or oversubscribed machine.</summary>
    public int? Threads { get; init; }

    /// <summary>False (default): a weight tensor holding NaN or infinite values is refused at load with an error
    /// naming the tensor (it would make every embedding NaN). True: such weights are loaded, with a warning naming
    /// each tensor through <see cref="Logger"/>.</summary>
    public bool AllowNonFiniteWeights { get; init; }

    /// <summary>Where loading reports warnings (e.g. non-finite weights allowed by
    /// <see cref="AllowNonFiniteWeights"/>); null = nowhere.</summary>
    public ILogger? Logger { get; init; }

    /// <summary>Where a Hugging Face model id (<c>org/name[@revision]</c>) is looked up and downloaded; null = the
    /// environment, read as huggingface_hub reads it (<see cref="HubOptions.FromEnvironment()"/>: HF_ENDPOINT,
    /// HF_HUB_CACHE / HF_HOME, HF_TOKEN, HF_HUB_OFFLINE). Unused for a folder or "default".</summary>
    public HubOptions? Hub { get; init; }

    /// <summary>Progress of the files a Hugging Face model id downloads (nothing is reported when it is cached).</summary>
    public IProgress<ModelDownloadProgress>? DownloadProgress { get; init; }

    /// <summary>Cancels a Hugging Face download in progress (<see cref="OperationCanceledException"/>); what arrived
    /// stays in the cache's <c>blobs/…incomplete</c> file and the next load resumes it.</summary>
    public CancellationToken CancellationToken { get; init; }
}
