using Microsoft.Extensions.Logging;
using Ullme.MLNet.Hub;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Inference;

/// <summary>How to load a model: precision and device.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Precision of weights and matmuls. Default float32.</summary>
    public ModelDType DType { get; init; } = ModelDType.Float32;

    /// <summary>What runs the forward pass: <see cref="InferenceBackend.Torch"/> (default; TorchSharp, everything
    /// including training and log-likelihood scoring) or <see cref="InferenceBackend.OnnxRuntime"/> (embedding only:
    /// the folder's exported <c>model.onnx</c>, or the model exported in memory at load; needs the Ullme.MLNet.Onnx
    /// package). A folder that holds a <c>model.onnx</c> and no safetensors weights loads on ONNX Runtime whatever
    /// this says.</summary>
    public InferenceBackend Backend { get; init; } = InferenceBackend.Torch;

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

    /// <summary>Checks every setting: a known dtype, a device spelled "cpu", "cuda" or "cuda:N", and
    /// <see cref="Threads"/> between 1 and the machine's cores (<see cref="Environment.ProcessorCount"/>: more
    /// threads than cores only adds contention, and a mistyped 10000 would start thousands of threads).</summary>
    /// <exception cref="UllmeException">A setting is invalid; the message names it and its value.</exception>
    public void Validate()
    {
        OptionCheck.Defined(DType, "ModelLoadOptions.DType");
        OptionCheck.Defined(Backend, "ModelLoadOptions.Backend");
        if (Device is null || !IsDevice(Device))
            throw OptionCheck.Error("ModelLoadOptions.Device", $"must be \"cpu\", \"cuda\" or \"cuda:N\" (got '{Device}')");
        if (Threads is { } t)
            OptionCheck.Range(t, 1, Environment.ProcessorCount, "ModelLoadOptions.Threads", "this machine's cores");
    }

    /// <summary>Whether <paramref name="device"/> is "cpu", "cuda" or "cuda:N" (any case, spaces trimmed).</summary>
    internal static bool IsDevice(string device)
    {
        string d = device.Trim().ToLowerInvariant();
        if (d is "cpu" or "cuda") return true;
        return d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d.AsSpan(5), out int n) && n >= 0;
    }

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
